"""What a model computes inside for one digit: its hidden layers, its first-layer weights, and saliency.

`explain(model, image)` runs one 28×28 digit (uint8 (1, 28, 28), as preprocessing makes it) through
the model and returns an `Explanation`: the probabilities, every hidden layer's output (an MLP's
ReLU units; a convolutional net's feature maps after each pooling block), and an attribution map
per requested class. `first_layer_weights(model)` gives what the first layer looks for: an MLP's
hidden units as 28×28 weight images, a conv net's filters.

Attribution is integrated gradients (Sundararajan et al. 2017) from a black baseline, the empty
page. Gradient × input is one backward pass cheaper, but on ReLU nets a single gradient only sees
the local slope: a saturated unit contributes nothing and the map is noisy. Integrated gradients
averages the gradient along the straight path from the blank page to the digit, so its maps sum to
logit(digit) - logit(blank) (completeness), which makes "how much did this pixel push towards a 7"
a quantity, not just a picture. The path's `steps` points go through the model as one batch and
every requested class is read from the same backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import PreprocessOptions
from ..data.datasets import to_float
from ..errors import ConfigError
from ..images.preprocess import load_image, prepare
from ..models.nets import MLP, in_preferred_layout

STEPS = 16  # points on the path from the blank page; the completeness gap of the midpoint rule stays small
POOLS = (nn.MaxPool2d, nn.AvgPool2d)


@dataclass
class Layer:
    """One hidden layer's output for the digit: `values` is (units,) for a dense layer, (C, H, W) for maps."""

    name: str
    kind: str  # "dense" or "maps"
    values: torch.Tensor


@dataclass
class Explanation:
    """A model's view of one digit: `probabilities` (C,) float64, `logits` (C,), the 28×28 `image` it saw
    (uint8), its hidden `layers`, and `saliency`: class index -> (28, 28) integrated-gradients map
    whose sum is logits[class] - `baseline_logits`[class] (up to the path's discretisation)."""

    probabilities: torch.Tensor
    logits: torch.Tensor
    image: torch.Tensor
    layers: list[Layer] = field(default_factory=list)
    saliency: dict[int, torch.Tensor] = field(default_factory=dict)
    baseline_logits: torch.Tensor | None = None
    box: tuple[int, ...] | None = None  # where the digit's ink was in the picture, when it came from one

    @property
    def index(self) -> int:
        """The predicted class's position."""
        return int(self.probabilities.argmax())

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        """The `k` most likely classes as (index, probability), best first."""
        values, indices = self.probabilities.topk(min(k, len(self.probabilities)))
        return list(zip(indices.tolist(), values.tolist(), strict=True))

    def to_dict(self, classes=tuple("0123456789")) -> dict:
        """The JSON form: label, confidence, probabilities, top 3, the 28×28 image (0-255 rows), the box,
        layers [{name, kind, shape, values}] and saliency [{label, index, values, total, difference}]."""
        names = [str(name) for name in classes]
        baseline = self.baseline_logits if self.baseline_logits is not None else torch.zeros_like(self.logits)
        return {
            "label": names[self.index],
            "confidence": float(self.probabilities[self.index]),
            "probabilities": self.probabilities.tolist(),
            "top": [{"label": names[index], "probability": p} for index, p in self.top(3)],
            "image": self.image[0].tolist(),
            "box": list(self.box) if self.box else None,
            "layers": [
                {
                    "name": layer.name,
                    "kind": layer.kind,
                    "shape": list(layer.values.shape),
                    "values": layer.values.tolist(),
                }
                for layer in self.layers
            ],
            "saliency": [
                {
                    "label": names[index],
                    "index": index,
                    "values": values.tolist(),
                    "total": float(values.sum()),
                    "difference": float(self.logits[index] - baseline[index]),
                }
                for index, values in self.saliency.items()
            ],
        }


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _floats(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> float in [0, 1] on the model's device, in the layout it runs fastest in."""
    return in_preferred_layout(model, to_float(images.to(_device(model))))


@torch.no_grad()
def hidden_layers(model: nn.Module, images: torch.Tensor) -> list[Layer]:
    """Each hidden layer's output for uint8 `images` (N, 1, 28, 28), values (N, ...) on the CPU, in the model's
    current mode (explain puts it in eval mode first).

    An MLP gives the output of every hidden ReLU; a model with a `features` stack (cnn, lenet5) gives
    the feature maps leaving each pooling layer, one "block" each; any other model gives none.
    """
    values, layers = _floats(model, images), list[Layer]()
    if isinstance(model, MLP):
        values = values.flatten(1)
        for module in list(model.net.children())[:-1]:
            values = module(values)
            if isinstance(module, nn.ReLU):
                layers.append(Layer(f"hidden {len(layers) + 1}", "dense", values.cpu()))
    elif isinstance(features := getattr(model, "features", None), nn.Sequential):
        for module in list(features.children()):
            values = module(values)
            if isinstance(module, POOLS):
                layers.append(Layer(f"block {len(layers) + 1}", "maps", values.contiguous().cpu()))
    return layers


def first_layer_weights(model: nn.Module) -> tuple[str, torch.Tensor, torch.Tensor | None] | None:
    """What the first layer looks for: (kind, weights (K, H, W), bias (K,) or None), or None for other models.

    kind "units": an MLP's first Linear layer, each hidden unit's 784 weights as a 28×28 image;
    kind "filters": a first Conv2d's kernels, averaged over input channels (one for gray digits).
    """
    first = next((module for module in model.modules() if isinstance(module, (nn.Linear, nn.Conv2d))), None)
    if isinstance(first, nn.Linear) and first.in_features == 28 * 28:
        weights, kind = first.weight.reshape(-1, 28, 28), "units"
    elif isinstance(first, nn.Conv2d):
        weights, kind = first.weight.mean(1), "filters"
    else:
        return None
    bias = first.bias.detach().cpu().float() if first.bias is not None else None
    return kind, weights.detach().cpu().float(), bias


def integrated_gradients(
    model: nn.Module, image: torch.Tensor, targets: list[int], steps: int = STEPS, baseline: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attributions (T, 28, 28) of uint8 `image` (1, 28, 28) to each target class, and the baseline's logits (C,).

    `baseline` b is float (1, 28, 28) in [0, 1], black by default. See `path_integral` for the method.
    """
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    was_training = model.training
    model.eval()
    try:
        digit = to_float(image.to(_device(model)))[None]  # (1, 1, 28, 28)
        start = torch.zeros_like(digit) if baseline is None else baseline.to(digit).reshape_as(digit)
        wanted = torch.tensor(targets, device=digit.device)
        maps = path_integral(model, digit.expand(len(targets), -1, -1, -1), start, wanted, steps)
        with torch.no_grad():
            baseline_logits = model(in_preferred_layout(model, start))[0]
        return maps.cpu(), baseline_logits.detach().cpu()
    finally:
        model.train(was_training)


def path_integral(
    model: nn.Module, digits: torch.Tensor, start: torch.Tensor, targets: torch.Tensor, steps: int
) -> torch.Tensor:
    """Integrated gradients (N, 28, 28) of float `digits` (N, 1, 28, 28) from `start` (1, 1, 28, 28), row i to
    class targets[i], by the midpoint rule: x_a = b + a (x - b), a = (k + 1/2) / steps, and
    attribution = (x - b) * mean_k dlogit/dx(x_a).

    All N × steps path points go through the model as one batch and one backward pass gives every
    gradient: each row asks for its own target's logit, so the rows' gradients do not mix.
    """
    alphas = (torch.arange(steps, device=digits.device, dtype=digits.dtype) + 0.5) / steps
    path = start[None] + alphas.view(1, -1, 1, 1, 1) * (digits - start)[:, None]  # (N, steps, 1, 28, 28)
    batch = path.reshape(-1, 1, 28, 28).requires_grad_(True)
    logits = model(in_preferred_layout(model, batch))
    wanted = targets.repeat_interleave(steps)
    (gradients,) = torch.autograd.grad(logits.gather(1, wanted[:, None]).sum(), batch)
    return (gradients.reshape(len(digits), steps, 28, 28).mean(1) * (digits - start)[:, 0]).detach()


def explain(model: nn.Module, image: torch.Tensor, targets=(), steps: int = STEPS) -> Explanation:
    """The model's view of one uint8 digit `image` (1, 28, 28): probabilities, hidden layers, and saliency
    for the predicted class and for each class index in `targets`."""
    if image.dtype != torch.uint8 or tuple(image.shape) != (1, 28, 28):
        raise ConfigError(f"explain needs one uint8 (1, 28, 28) image, got {image.dtype} {tuple(image.shape)}")
    was_training = model.training
    model.eval()  # dropout off for the layers shown as much as for the answer
    try:
        layers = hidden_layers(model, image[None])
        with torch.no_grad():
            logits = model(_floats(model, image[None]))[0].cpu()
    finally:
        model.train(was_training)
    classes = len(logits)
    wanted = [int(logits.argmax())]
    for target in targets:
        if not 0 <= int(target) < classes:
            raise ConfigError(f"class index must be between 0 and {classes - 1}, got {target}")
        if int(target) not in wanted:
            wanted.append(int(target))
    maps, baseline_logits = integrated_gradients(model, image, wanted, steps)
    return Explanation(
        probabilities=logits.double().softmax(0),
        logits=logits,
        image=image.cpu(),
        layers=[Layer(layer.name, layer.kind, layer.values[0]) for layer in layers],
        saliency=dict(zip(wanted, maps, strict=True)),
        baseline_logits=baseline_logits,
    )


def attribution_maps(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int = STEPS, chunk: int = 16
) -> torch.Tensor:
    """Integrated-gradients maps (N, 28, 28) of uint8 `images` (N, 1, 28, 28), each to its own target class,
    from a black image; `chunk` digits go through the model at once."""
    was_training = model.training
    model.eval()
    try:
        device = _device(model)
        maps = [
            path_integral(
                model,
                to_float(images[first : first + chunk].to(device)),
                torch.zeros(1, 1, 28, 28, device=device),
                targets[first : first + chunk].to(device),
                steps,
            ).cpu()
            for first in range(0, len(images), chunk)
        ]
        return torch.cat(maps) if maps else torch.zeros(0, 28, 28)
    finally:
        model.train(was_training)


def explain_picture(
    model: nn.Module,
    picture,
    classes=tuple("0123456789"),
    targets=(),
    options: PreprocessOptions = PreprocessOptions(),
    steps: int = STEPS,
) -> Explanation:
    """Prepare one picture (a path, PIL image or array) as `digitlab predict` does, then explain it.

    `targets` are classes to attribute besides the predicted one, by name ("3") or index (3).
    Raises ImageError for an unreadable or blank picture, ConfigError for an unknown class.
    """
    prepared = prepare(load_image(picture) if isinstance(picture, (str, Path)) else picture, options)
    explanation = explain(model, prepared.image, class_indices(targets, classes), steps)
    explanation.box = prepared.box
    return explanation


def class_indices(targets, classes) -> list[int]:
    """Class names or indices -> indices; ConfigError naming the first one that is neither."""
    names = [str(name) for name in classes]
    indices = []
    for target in targets:
        if str(target) in names:
            indices.append(names.index(str(target)))
        elif isinstance(target, int) and 0 <= target < len(names):
            indices.append(target)
        else:
            raise ConfigError(f"unknown class {target!r} (classes: {', '.join(names)})")
    return indices
