"""`digitlab train`: every training setting as a flag, a progress bar, and --resume."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from ..errors import ConfigError, DigitlabError
from .common import DATASETS, MODELS, RECIPES


def add_parsers(commands) -> None:
    train = commands.add_parser("train", help="train a model and save a run folder")
    add_train_arguments(train)
    train.add_argument(
        "--report", action="store_true", help="write the run's visual report (RUN/report) after training"
    )
    train.set_defaults(handler=cmd_train)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import DEVICES, ENGINES, OPTIMIZERS, PRECISIONS, SCHEDULES, TRACKERS, TrainConfig

    defaults = TrainConfig()
    parser.add_argument("--config", metavar="FILE", help="JSON config to start from (flags override it)")
    parser.add_argument(
        "--model", choices=MODELS, metavar="MODEL", help=f"model name: %(choices)s (default {defaults.model})"
    )
    parser.add_argument("--hidden", type=_int_list, metavar="W,W", help="hidden sizes for mlp (default 32,16)")
    parser.add_argument(
        "--dataset", choices=DATASETS, metavar="DATASET", help=f"dataset: %(choices)s (default {defaults.dataset})"
    )
    parser.add_argument("--epochs", type=int, help=f"epochs (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, help=f"batch size (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {defaults.lr})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimizer (default {defaults.optimizer})")
    parser.add_argument("--weight-decay", type=float, help=f"weight decay (default {defaults.weight_decay})")
    parser.add_argument(
        "--betas", type=_float_list, metavar="B1,B2", help="Adam/AdamW moment decay rates (default 0.9,0.999)"
    )
    parser.add_argument("--seed", type=int, help=f"seed for initialisation and batch order (default {defaults.seed})")
    parser.add_argument(
        "--val-size", type=int, help=f"validation images carved from train (default {defaults.val_size})"
    )
    parser.add_argument("--train-size", type=int, help="train on the first N training images only (default all)")
    parser.add_argument("--device", choices=DEVICES, help=f"device (default {defaults.device})")
    parser.add_argument("--engine", choices=ENGINES, help=f"training engine (default {defaults.engine})")
    parser.add_argument("--threads", type=int, help="torch threads, 0 = torch's default (default 0)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="bf16: autocast forward and loss to bfloat16 where the hardware has it (AMX or AVX-512 BF16 "
        "on a CPU), else fp32; metrics.json records which ran (default fp32)",
    )
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/<model>-<timestamp>)")
    recipe = parser.add_argument_group("recipe (all off by default, so the seed recipe stays exact)")
    recipe.add_argument(
        "--recipe",
        choices=RECIPES,
        metavar="RECIPE",
        help="named preset for the model, one of %(choices)s; flags given win",
    )
    recipe.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default constant)")
    recipe.add_argument("--warmup", type=float, help="fraction of steps warming up (default 0)")
    recipe.add_argument("--label-smoothing", type=float, help="label smoothing (default 0)")
    recipe.add_argument("--dropout", type=float, help="dropout for models that have it (default: the model's)")
    recipe.add_argument(
        "--keep-best", action="store_true", default=None, help="end on the epoch with the best validation accuracy"
    )
    recipe.add_argument("--teacher", metavar="RUN", help="distil from this trained run")
    recipe.add_argument("--distill-temperature", type=float, help="distillation temperature (default 4)")
    recipe.add_argument("--distill-weight", type=float, help="weight of the distillation loss (default 0.5)")
    augment = parser.add_argument_group("augmentation (batched, on the device; off by default)")
    augment.add_argument(
        "--augment", action="store_true", help="turn on the preset: ±10°, ±2 px, ±10%% scale, ±10° shear"
    )
    augment.add_argument("--augment-rotate", type=float, metavar="DEG", help="rotation range, ± degrees")
    augment.add_argument("--augment-translate", type=float, metavar="PX", help="shift range, ± pixels")
    augment.add_argument("--augment-scale", type=float, metavar="F", help="scale range, 1 ± F")
    augment.add_argument("--augment-shear", type=float, metavar="DEG", help="shear range, ± degrees")
    augment.add_argument(
        "--augment-elastic-alpha", type=float, metavar="PX", help="elastic distortion strength (0 = off)"
    )
    augment.add_argument("--augment-elastic-sigma", type=float, metavar="PX", help="elastic smoothness (default 4)")
    augment.add_argument(
        "--augment-thickness",
        type=float,
        metavar="STEPS",
        help="pen thickness: strokes thicken by up to STEPS 3x3 dilations (0..2) or thin a little",
    )
    augment.add_argument("--augment-blur", type=float, metavar="PX", help="largest Gaussian blur sigma")
    augment.add_argument("--augment-contrast", type=float, metavar="F", help="ink darkness scaled by 1-F..1")
    augment.add_argument("--augment-noise", type=float, metavar="STD", help="largest pixel noise std (pixels in 0..1)")
    parser.add_argument(
        "--preprocess",
        metavar="STEPS",
        help="preprocessing steps changed from the defaults for this model, recorded in the "
        "model file: e.g. deskew (train and read deskewed digits) or no-stroke",
    )
    parser.add_argument(
        "--log",
        action="append",
        choices=TRACKERS,
        help="also log the run to an experiment tracker (repeatable): TensorBoard event files in the run "
        "folder, MLflow at $MLFLOW_TRACKING_URI (default: the local store), or RUN/metrics.csv",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue RUN from its last complete epoch (its saved config; only --epochs and --lr may change)",
    )


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _given_fields(args) -> list[str]:
    """The TrainConfig fields given as flags (every field with a flag defaults to None)."""
    from ..config import TrainConfig

    return [field.name for field in dataclasses.fields(TrainConfig) if getattr(args, field.name, None) is not None]


def _config_from_args(args):
    from ..config import TrainConfig
    from ..training.recipes import AUGMENT, apply_recipe

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config = config.with_model(args.model)
    if args.recipe:
        config = apply_recipe(config, args.recipe)
    if args.augment:
        config = config.replace(**AUGMENT)
    changes = {name: getattr(args, name) for name in _given_fields(args)}
    if args.hidden is not None:
        changes["model_kwargs"] = {**config.model_kwargs, "hidden": args.hidden}
    return config.replace(**changes)


def cmd_train(args) -> int:
    from ..training.distributed import shutdown as shutdown_distributed
    from ..training.train import resume, train

    if args.resume:
        changed = [
            name
            for name in [*_given_fields(args), "config", "hidden"]
            if name not in ("epochs", "lr") and getattr(args, name) is not None
        ]
        if changed:
            raise ConfigError(f"--resume continues the run's saved config; drop --{changed[0].replace('_', '-')}")
        run = resume(args.resume, epochs=args.epochs, lr=args.lr, progress=_show_progress())
    else:
        run = train(_config_from_args(args), progress=_show_progress())
    shutdown_distributed()
    if run.path is None:  # a non-zero rank under torchrun: rank 0 reports
        return 0
    metrics = run.metrics
    print(
        f"test accuracy {metrics['test_accuracy']:.2%} (validation {metrics['val_accuracy'] or 0:.2%}) — "
        f"{metrics['parameters']:,} parameters, {metrics['train_seconds']:.1f} s of training ({metrics['engine']})"
    )
    tracking = metrics.get("tracking", {})
    if args.report:
        _write_report(run, tracking)
    for name, record in tracking.items():
        print(
            f"{name} log: {record.get('where', '')}"
            if record["complete"]
            else f"{name} log incomplete: {record['error']}"
        )
    print(f"run saved to {run.path}")
    return 0


def _show_progress() -> bool:
    """A bar over epochs on a terminal; none when stderr is not one (a log file, a pipe) or on other ranks."""
    return sys.stderr.isatty() and os.environ.get("RANK", "0") == "0"


def _write_report(run, tracking: dict) -> None:
    from ..errors import RunError
    from ..runs.report import write_report

    written = next((record["report"] for record in tracking.values() if record.get("report")), None)
    if written:  # MLflow's tracker wrote it already, to log it
        print(f"report written to {written}")
        return
    try:
        print(f"report written to {write_report(run)}")
    except DigitlabError as error:
        raise RunError(f"run saved to {run.path}, but its report failed: {error}") from None
