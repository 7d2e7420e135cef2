"""`digitlab doctor RUN`, `digitlab doctor data` and `digitlab lr-find`: what is wrong with a run or a
dataset, with the evidence and the fix to try, and the learning-rate range test."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from .common import DATASETS, log

DATA = "data"  # `digitlab doctor data` examines the dataset; a run folder named data is ./data


def add_parsers(commands) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="find what is wrong with a run (RUN) or with a dataset (data), show the evidence and say what to try",
        description="digitlab doctor RUN: checks the run's curves (chance, learning rate, stopping), its insides "
        "(input scale, dead or saturated units, gradient flow), its fit, calibration, confusions, label noise and "
        "real-world gap, and writes RUN/doctor/index.html. digitlab doctor data: suspect labels over the training "
        "and test files by cross-validated confident learning (cleanlab), near-duplicates and class balance.",
    )
    doctor.add_argument(
        "target", metavar="RUN|data", help="a run folder (or model .safetensors file), or the word data"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object: findings (RUN) or suspects (data)")
    doctor.add_argument("--out", metavar="DIR", help="report folder (default RUN/doctor, or doctor-DATASET for data)")
    doctor.add_argument(
        "--real-world",
        type=int,
        metavar="N",
        help="RUN: real-world pictures per condition for the real-world gap, 0 to skip (default: the checkup's, "
        "Probes.real_world)",
    )
    doctor.add_argument(
        "--dataset", choices=DATASETS, metavar="DATASET", help="data: which dataset, %(choices)s (default mnist)"
    )
    doctor.add_argument("--folds", type=int, default=4, help="data: cross-validation folds (default 4)")
    doctor.add_argument(
        "--epochs", type=int, default=None, help="data: epochs per fold's model (default that of its recipe, 2)"
    )
    doctor.add_argument("--top", type=int, default=20, metavar="N", help="data: suspects printed (default 20)")
    doctor.add_argument("--device", default="auto", help="where models run (default auto)")
    doctor.set_defaults(handler=cmd_doctor)

    lr_find = commands.add_parser(
        "lr-find",
        help="learning-rate range test (Smith 2017): train briefly at rising rates and name a good range",
    )
    from .train import add_train_arguments

    add_train_arguments(lr_find)
    lr_find.add_argument("--steps", type=int, default=200, help="steps of the test (default 200)")
    lr_find.add_argument("--start", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    lr_find.add_argument("--end", type=float, default=1.0, help="last learning rate (default 1)")
    lr_find.add_argument("--figure", metavar="PNG", help="also save the loss-against-rate curve as a PNG")
    lr_find.add_argument("--json", action="store_true", help="print one JSON object")
    lr_find.set_defaults(handler=cmd_lr_find)


def cmd_doctor(args) -> int:
    if args.target == DATA:
        return _doctor_data(args)
    if args.dataset is not None:
        raise ConfigError("--dataset goes with 'digitlab doctor data'; a run is examined on its own dataset")
    from ..runs.checkup import Probes, write_checkup
    from ..runs.run import load_run

    if args.real_world is not None and args.real_world < 0:
        raise ConfigError(f"--real-world must not be negative, got {args.real_world}")
    run = load_run(args.target, args.device)
    findings = run.doctor(probes=Probes() if args.real_world is None else Probes(real_world=args.real_world))
    folder = Path(args.out) if args.out else (run.path / "doctor" if run.path and not args.json else None)
    if folder is not None:
        index = write_checkup(findings, folder, f"digitlab doctor: {run.path.name if run.path else args.target}")
    if args.json:
        print(json.dumps(findings.to_dict(), indent=2))
        return 0
    print("\n".join(findings.lines()))
    alarms = findings.alarms()
    print(f"{len(alarms)} warning(s) or problem(s)" if alarms else "no warnings: the run looks healthy")
    if folder is not None:
        print(f"report written to {index}")
    return 0


def _doctor_data(args) -> int:
    from ..doctor.data import examine_data, write_data_report
    from ..doctor.labels import CROSS_VALIDATION

    name = args.dataset or "mnist"
    config = CROSS_VALIDATION.replace(device=args.device)
    if args.epochs is not None:
        config = config.replace(epochs=args.epochs)
    checkup = examine_data(name, config, args.folds, log=log)
    index = write_data_report(checkup, args.out or f"doctor-{name}")
    if args.json:
        print(json.dumps(checkup.to_dict(), indent=2))
        return 0
    classes = checkup.dataset.classes
    print("\n".join(checkup.findings().lines()))
    for suspect in checkup.suspects[: args.top]:
        print(
            f"  {suspect.split:<5} {suspect.index:>6}  label {classes[suspect.label]:<3} "
            f"suggested {classes[suspect.suggested]:<3} score {suspect.score:.4f}"
        )
    took = sum(checkup.seconds.values())
    print(f"{took:.0f} s; report written to {index}")
    return 0


def cmd_lr_find(args) -> int:
    from ..doctor.lr_find import lr_find
    from .train import _config_from_args

    if args.resume:
        raise ConfigError("lr-find starts a fresh model; --resume does not apply")
    if not 0 < args.start < args.end:
        raise ConfigError(f"the rates must rise: --start {args.start:g} must be positive and below --end {args.end:g}")
    if args.steps < 10:
        raise ConfigError(f"--steps must be at least 10, got {args.steps}")
    found = lr_find(_config_from_args(args), steps=args.steps, start=args.start, end=args.end)
    if args.figure:
        from ..files import atomic_write

        figure = found.figure()
        atomic_write(Path(args.figure), lambda temp: figure.savefig(temp, format="png"))
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return 0
    print(
        f"suggested learning rate {found.suggested:.2g} (good range {found.low:.2g} to {found.high:.2g}; "
        f"steepest fall at {found.steepest:.2g}, lowest loss at {found.lowest:.2g})"
    )
    if args.figure:
        print(f"curve saved to {args.figure}")
    return 0
