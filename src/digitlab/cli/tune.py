"""`digitlab tune`: an Optuna study from the command line, one line per finished trial."""

from __future__ import annotations

from .common import DATASETS, MODELS, Names, format_settings, log


def add_parsers(commands) -> None:
    from ..config import DEVICES

    tune = commands.add_parser(
        "tune",
        help="search hyperparameters with Optuna on the validation split "
        "(resumable, prunable, parallel; the test set is never used)",
    )
    tune.add_argument(
        "--model",
        choices=MODELS,
        metavar="MODEL",
        help="model to tune: %(choices)s (default mlp, or the --config's)",
    )
    tune.add_argument(
        "--trials",
        type=int,
        default=20,
        metavar="N",
        help="finished trials (complete or pruned) the study should hold in all, over every worker (default 20)",
    )
    tune.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    tune.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL, e.g. postgresql://user:pass@host/db (default sqlite:///OUT/study.db)",
    )
    tune.add_argument("--study", metavar="NAME", help="study name (default: the model name)")
    tune.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        metavar="K",
        help="trials at once in this process (threads share the cores; for more, run more processes; default 1)",
    )
    tune.add_argument("--space", metavar="FILE", help="TOML or JSON file overriding parts of the search space")
    tune.add_argument(
        "--pruner",
        choices=Names(_pruners),
        metavar="PRUNER",
        default="median",
        help="stop unpromising trials early: %(choices)s (default median)",
    )
    tune.add_argument("--seed", type=int, help="seed of the sampler (default random)")
    tune.add_argument(
        "--grace",
        type=int,
        metavar="S",
        help="a worker that dies mid-trial has its trial failed and retried S s after its last heartbeat "
        "(heartbeats every S/6 s; default: digitlab.tuning.study.GRACE_SECONDS)",
    )
    tune.add_argument(
        "--out", metavar="DIR", help="study folder for best.json, trials.csv and figures (default tunes/STUDY)"
    )
    base = tune.add_argument_group("what every trial starts from (default: the model's fast recipe)")
    base.add_argument("--config", metavar="FILE", help="JSON config to start from")
    base.add_argument("--dataset", choices=DATASETS, metavar="DATASET", help="dataset: %(choices)s (default mnist)")
    base.add_argument(
        "--train-size", type=int, metavar="N", help="train on the first N training images only (default all)"
    )
    base.add_argument("--val-size", type=int, metavar="N", help="validation images carved from train (default 5000)")
    base.add_argument("--threads", type=int, metavar="N", help="torch threads per process, 0 = torch's default")
    base.add_argument("--device", choices=DEVICES, help="device (default auto)")
    tune.set_defaults(handler=cmd_tune)


def cmd_tune(args) -> int:
    from ..tuning.tune import tune

    result = tune(
        trials=args.trials,
        base=_tune_base(args),
        space=args.space,
        timeout=args.timeout,
        storage=args.storage,
        study=args.study,
        n_jobs=args.n_jobs,
        pruner=args.pruner,
        seed=args.seed,
        out=args.out,
        on_trial=_print_trial,
        log=log,
        **({} if args.grace is None else {"grace": args.grace}),
    )
    print(f"study {result.study}: {result.finished} finished trials ({result.pruned} pruned, {result.new} new)", end="")
    if result.best_trial is None:
        print("; no complete trial yet")
    else:
        print(f"; best validation accuracy {result.best_value:.2%} (trial {result.best_trial})")
        print(f"retrain it and test it with: digitlab train --config {result.folder / 'best.json'}")
    print(f"outputs in {result.folder}: " + ", ".join(path.name for path in result.files))
    return 0


def _tune_base(args):
    from ..config import TrainConfig
    from ..tuning.tune import base_config

    if args.config:
        config = TrainConfig.from_file(args.config).with_model(args.model)
    else:
        config = base_config(args.model or "mlp")
    changes = {
        name: getattr(args, name)
        for name in ("dataset", "train_size", "val_size", "threads", "device")
        if getattr(args, name) is not None
    }
    return config.replace(**changes)


def _print_trial(record: dict) -> None:
    """One line per finished trial: number, outcome, duration, parameters, and the study's best so far."""
    value = f"{record['value']:.2%}" if record["value"] is not None else "none"
    if record.get("diverged"):
        outcome = f"pruned: {record['diverged']}"
    elif record["state"] == "pruned":
        outcome = f"pruned after epoch {record['epochs']} (val {value})"
    else:
        outcome = f"val {value} after {record['epochs']} epoch{'s' if record['epochs'] != 1 else ''}"
    best = "no best yet"
    if record["best_trial"] is not None:
        best = f"best {record['best_value']:.2%} (trial {record['best_trial']})"
    settings = format_settings(record["params"])
    print(f"trial {record['number']}: {outcome}, {record['seconds']:.1f} s | {settings} | {best}", flush=True)


def _pruners() -> tuple[str, ...]:
    from ..tuning.study import PRUNERS

    return PRUNERS
