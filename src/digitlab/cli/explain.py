"""`digitlab explain`: what a model computes inside for one picture of a digit."""

from __future__ import annotations

import json

from .predict import _run_and_paths


def add_parsers(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="show what a model computes inside for one picture: top 3, hidden layers, and the "
        "integrated-gradients saliency of its answer (and of --target classes)",
    )
    explain.add_argument(
        "paths",
        nargs="+",
        metavar="[RUN] PICTURE",
        help="a run folder (or a model .safetensors file), then one image file; without a run, the shipped model",
    )
    explain.add_argument(
        "--target", action="append", default=[], metavar="CLASS", help="also attribute to this class (repeatable)"
    )
    explain.add_argument("--steps", type=int, default=16, help="integrated-gradients path steps (default 16)")
    explain.add_argument("--json", action="store_true", help="print one JSON object with every value")
    explain.set_defaults(handler=cmd_explain)


def cmd_explain(args) -> int:
    from ..errors import ConfigError

    run, pictures = _run_and_paths(args.paths)
    if len(pictures) != 1:
        raise ConfigError(f"explain reads one picture at a time, got {len(pictures)}")
    explanation = run.explain(pictures[0], targets=args.target, steps=args.steps)
    if args.json:
        print(json.dumps({"file": pictures[0], **explanation.to_dict(run.classes)}))
        return 0
    names = [str(name) for name in run.classes]
    top = ", ".join(f"{names[index]} {p:.1%}" for index, p in explanation.top(3))
    print(f"{pictures[0]}: {top}")
    for layer in explanation.layers:
        values = layer.values
        if layer.kind == "dense":
            active = int((values > 0).sum())
            print(f"  {layer.name}: {active} of {len(values)} units active, strongest unit {int(values.argmax())}")
        else:
            strongest = int(values.mean((1, 2)).argmax())
            print(
                f"  {layer.name}: {values.shape[0]} maps of {values.shape[1]}×{values.shape[2]}, most active {strongest}"
            )
    assert explanation.baseline_logits is not None  # explain always attributes from a baseline
    for index, values in explanation.saliency.items():
        rise = float(explanation.logits[index] - explanation.baseline_logits[index])
        print(
            f"  why {names[index]}: saliency sums to {float(values.sum()):+.3f} "
            f"(its logit rose {rise:+.3f} from a blank page)"
        )
    return 0
