"""The ensemble command: several runs' models averaged into one run folder."""

from __future__ import annotations

import json

from .common import add_device


def add_parsers(commands) -> None:
    ensemble = commands.add_parser(
        "ensemble",
        help="average the probabilities of several runs' models into one run folder "
        "(scored on validation and test, with and without --tta)",
    )
    ensemble.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders of the same dataset")
    ensemble.add_argument("--out", metavar="DIR", help="run folder to write (default runs/ensemble-<timestamp>)")
    ensemble.add_argument("--json", action="store_true", help="print the ensemble's metrics as one JSON object")
    add_device(ensemble)
    ensemble.set_defaults(handler=cmd_ensemble)


def cmd_ensemble(args) -> int:
    from ..runs.ensemble import build_ensemble

    run = build_ensemble(args.runs, out=args.out, device=args.device)
    metrics = run.metrics
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(run.path),
                    **{key: metrics[key] for key in ("val_accuracy", "test_accuracy", "tta", "members")},
                }
            )
        )
        return 0
    percent = lambda value: "-" if value is None else f"{value:.2%}"  # noqa: E731
    for member in metrics["members"]:
        print(f"{member['run']}: validation {percent(member['val_accuracy'])}, test {percent(member['test_accuracy'])}")
    print(
        f"ensemble of {len(metrics['members'])}: validation {percent(metrics['val_accuracy'])}, test "
        f"{percent(metrics['test_accuracy'])}; with --tta: validation {percent(metrics['tta']['val_accuracy'])}, "
        f"test {percent(metrics['tta']['test_accuracy'])}"
    )
    print(f"run saved to {run.path}")
    return 0
