"""Checks that look inside the model: what its first layer is fed, which units never fire or sit
saturated, and how much gradient reaches each layer.

Activations are read with forward hooks on the activation modules (ReLU, Tanh, Sigmoid) over probe
images, in eval mode; gradients come from `torch.autograd.grad` over a few labelled training batches,
so nothing in the model changes (no `.grad`, no BatchNorm statistics, no optimizer step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...data.datasets import Split, to_float
from ...figures import doctor as pictures
from ...models.nets import in_preferred_layout
from .findings import Commands, Finding

WEIGHTED = (nn.Linear, nn.Conv2d)
SATURATING: dict[type, float] = {nn.Tanh: 0.99, nn.Sigmoid: 0.99}  # |tanh| or |2 sigmoid - 1| above this is saturated
INPUT_LIMITS = (0.05, 10.0)  # the first layer's inputs should reach above 0.05 and stay below 10
# Share of a layer's units that never fire: half is a warning (wide layers lose a third and more
# under a high one-cycle rate and still fit), nine tenths, or fewer live units than classes, a problem.
DEAD_WARNING, DEAD_PROBLEM = 0.5, 0.9
SATURATED_WARNING = 0.5  # share of a layer's outputs that sit in the flat tails
VANISHING = 1e-3  # a layer whose relative gradient is under 1/1000 of the liveliest layer's
EXPLODING = 10.0  # a relative gradient (|g| / |w|) above 10 would change the layer tenfold in one step


def layer_names(model: nn.Module) -> dict[nn.Module, str]:
    """Each activation module -> a description of the weighted layer it follows ("net.0 (Linear 784→32)")."""
    names: dict[nn.Module, str] = {}
    last = None
    for name, module in model.named_modules():
        if isinstance(module, WEIGHTED):
            last = f"{name} ({_describe(module)})"
        elif isinstance(module, (nn.ReLU, nn.Tanh, nn.Sigmoid)):
            names[module] = last or name
    return names


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}→{module.out_features}"
    assert isinstance(module, nn.Conv2d)
    return f"Conv2d {module.in_channels}→{module.out_channels}, {module.kernel_size[0]}×{module.kernel_size[1]}"


@torch.no_grad()
def activity(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> dict:
    """What the layers do over uint8 `images`: the first weighted layer's input values (a sample, and
    their range), and per activation layer each unit's share of images it fires on (ReLU: > 0 anywhere)
    and the share of its outputs that are saturated (tanh, sigmoid)."""
    device = next(model.parameters()).device
    first = next((module for module in model.modules() if isinstance(module, WEIGHTED)), None)
    names = layer_names(model)
    fires: dict[nn.Module, list[torch.Tensor]] = {module: [] for module in names}
    saturated: dict[nn.Module, list[torch.Tensor]] = {module: [] for module in names}
    inputs: list[torch.Tensor] = []

    def on_input(module, args):
        inputs.append(args[0].detach().flatten()[:: max(1, args[0].numel() // 20_000)].float().cpu())

    def on_output(module, args, output):
        values = output.detach().float()
        if isinstance(module, nn.ReLU):
            fires[module].append((values.flatten(2) if values.dim() > 2 else values[..., None]).amax(2).gt(0).cpu())
        else:
            centred = values if isinstance(module, nn.Tanh) else 2 * values - 1
            saturated[module].append(centred.abs().gt(SATURATING[type(module)]).float().mean().reshape(1).cpu())

    hooks = [module.register_forward_hook(on_output) for module in names]
    if first is not None:
        hooks.append(first.register_forward_pre_hook(on_input))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(in_preferred_layout(model, to_float(images[start : start + batch_size].to(device))))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    layers: list[dict] = []
    for module, name in names.items():
        if isinstance(module, nn.ReLU) and fires[module]:
            layers.append({"layer": name, "kind": "relu", "fires": torch.cat(fires[module]).float().mean(0)})
        elif saturated[module]:
            share = torch.cat(saturated[module]).mean().item()
            layers.append({"layer": name, "kind": type(module).__name__.lower(), "saturated": share})
    first_name = next((name for name, module in model.named_modules() if module is first), "")
    values = torch.cat(inputs) if inputs else torch.empty(0)
    return {"first_layer": first_name, "inputs": values, "layers": layers}


def input_scale(found: dict, commands: Commands) -> Finding:
    """Problem when the first layer is fed values far outside [0, 1] (pixels left at 0-255) or all near 0."""
    values = found["inputs"]
    if values.numel() == 0:
        return Finding("input-scale", "info", "no Linear or Conv2d layer: the input check is skipped", {})
    low, high = INPUT_LIMITS
    largest = values.abs().max().item()
    evidence: dict = {
        "layer": found["first_layer"],
        "min": values.min().item(),
        "max": values.max().item(),
        "mean": values.mean().item(),
        "std": values.std().item(),
    }
    draw = lambda: pictures.input_values(values, found["first_layer"])  # noqa: E731
    if largest > high or largest < low:
        what = "pixels left at 0-255 (not divided by 255)" if largest > high else "inputs that are all but zero"
        return Finding(
            "input-scale",
            "problem",
            f"The first layer ({found['first_layer']}) is fed values from {evidence['min']:.3g} to "
            f"{evidence['max']:.3g} (mean {evidence['mean']:.3g}, std {evidence['std']:.3g}): {what}; "
            "a net trains and generalises best on inputs of order one",
            evidence,
            "scale pixels to [0, 1] before the model (digitlab's loaders do: keep the model's inputs as they give them)",
            draw,
        )
    return Finding(
        "input-scale",
        "info",
        f"The first layer is fed values from {evidence['min']:.3g} to {evidence['max']:.3g}: well scaled",
        evidence,
        draw=draw,
    )


def dead_units(found: dict, classes: int, lr: float, commands: Commands) -> list[Finding]:
    """Per ReLU layer: the units that never fire on the probe images (a dead unit neither computes nor learns)."""
    relus = [layer for layer in found["layers"] if layer["kind"] == "relu"]
    if not relus:
        return [Finding("dead-units", "info", "no ReLU layers (nn.ReLU modules): the dead-unit check is skipped", {})]
    findings: list[Finding] = []
    draw = lambda: pictures.unit_activity(relus)  # noqa: E731
    for layer in relus:
        dead = int((layer["fires"] == 0).sum())
        units = layer["fires"].numel()
        share = dead / units
        if share >= DEAD_PROBLEM or (dead and units - dead < classes):
            severity = "problem"
        else:
            severity = "warning" if share >= DEAD_WARNING else "info"
        if dead == 0 and findings:
            continue
        evidence = {"layer": layer["layer"], "dead": dead, "units": units, "share": share}
        message = (
            f"{dead} of {units} units after {layer['layer']} never fire ({share:.0%}): they pass no signal and "
            "get no gradient"
            if dead
            else f"every unit after {layer['layer']} fires on some digits"
        )
        fix = (
            f"{commands.train(lr=lr / 10)} (one large step can push a unit below zero for every digit), "
            "or check how the layer is initialised"
        )
        findings.append(Finding("dead-units", severity, message, evidence, fix if dead else "", draw))
    alive = [finding for finding in findings if finding.evidence.get("dead")]
    return alive or findings[:1]


def saturated_units(found: dict) -> list[Finding]:
    """Per tanh or sigmoid layer: the share of outputs in the flat tails, where the gradient all but vanishes."""
    layers = [layer for layer in found["layers"] if layer["kind"] != "relu"]
    if not layers:
        return [Finding("saturated-units", "info", "no tanh or sigmoid layers: nothing to saturate", {})]
    findings = []
    for layer in layers:
        share = layer["saturated"]
        findings.append(
            Finding(
                "saturated-units",
                "warning" if share >= SATURATED_WARNING else "info",
                f"{share:.0%} of the outputs after {layer['layer']} sit in {layer['kind']}'s flat tails",
                {"layer": layer["layer"], "saturated_share": share},
                "scale the inputs to [0, 1] and lower --lr" if share >= SATURATED_WARNING else "",
            )
        )
    return findings


def gradients(model: nn.Module, split: Split, batches: int = 4, batch_size: int = 128, seed: int = 0) -> list[dict]:
    """Per weighted layer: the norms of its weights and of the loss's gradient for them, averaged over
    `batches` random training batches (eval mode; the model is left as it was)."""
    device = next(model.parameters()).device
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, WEIGHTED)]
    weights = [module.weight for _, module in layers]
    generator = torch.Generator().manual_seed(seed)
    totals = torch.zeros(len(layers), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for _ in range(batches):
            index = torch.randint(len(split), (min(batch_size, len(split)),), generator=generator)
            images = in_preferred_layout(model, to_float(split.images[index].to(device)))
            with torch.enable_grad():
                loss = F.cross_entropy(model(images).float(), split.labels[index].to(device))
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
            totals += torch.tensor([0.0 if grad is None else grad.double().norm().item() for grad in grads])
    finally:
        model.train(was_training)
    return [
        {
            "layer": f"{name} ({_describe(module)})",
            "grad_norm": total / batches,
            "weight_norm": module.weight.norm().item(),
        }
        for (name, module), total in zip(layers, totals.tolist(), strict=True)
    ]


def gradient_flow(layers: list[dict], commands: Commands) -> list[Finding]:
    """Problem for a layer no gradient reaches, or exploding gradients; warning for a vanishing one."""
    if not layers:
        return [Finding("gradient-flow", "info", "no Linear or Conv2d layers: the gradient check is skipped", {})]
    for layer in layers:
        layer["relative"] = layer["grad_norm"] / max(layer["weight_norm"], 1e-12)
    draw = lambda: pictures.gradient_flow(layers)  # noqa: E731
    evidence = {"layers": [{key: layer[key] for key in ("layer", "grad_norm", "weight_norm")} for layer in layers]}
    liveliest = max(layer["relative"] for layer in layers)
    if not math.isfinite(liveliest) or liveliest > EXPLODING:
        return [
            Finding(
                "gradient-flow",
                "problem",
                f"Exploding gradients: a layer's gradient is {liveliest:.3g}× its weights' norm",
                evidence,
                commands.train(lr=0.0001),
                draw,
            )
        ]
    still = [layer for layer in layers if layer["grad_norm"] == 0 or layer["relative"] < 1e-9]
    if still:
        names = ", ".join(layer["layer"] for layer in still)
        return [
            Finding(
                "gradient-flow",
                "problem",
                f"No gradient reaches {names}: {'that layer does' if len(still) == 1 else 'those layers do'} not "
                "learn (units that never fire block it)",
                evidence,
                "re-initialise the layer (see dead-units), or " + commands.train(seed=7),
                draw,
            )
        ]
    faint = [layer for layer in layers if layer["relative"] < VANISHING * liveliest]
    if faint:
        names = ", ".join(layer["layer"] for layer in faint)
        return [
            Finding(
                "gradient-flow",
                "warning",
                f"Vanishing gradient: {names} gets under 1/{1 / VANISHING:.0f} of the relative gradient the "
                "liveliest layer gets",
                evidence,
                "normalisation between layers (BatchNorm), ReLU instead of tanh/sigmoid, or a shallower model",
                draw,
            )
        ]
    return [
        Finding(
            "gradient-flow",
            "info",
            f"Gradients reach every layer ({len(layers)} layers, relative sizes within "
            f"{liveliest / max(min(layer['relative'] for layer in layers), 1e-30):.0f}×)",
            evidence,
            draw=draw,
        )
    ]
