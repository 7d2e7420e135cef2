"""The `digitlab` command. Only this module parses arguments; each command calls the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import ConfigError, DigitlabError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from .config import DEVICES, ENGINES, OPTIMIZERS, SCHEDULES, TrainConfig
    from .data import list_datasets
    from .models import list_models
    from .recipes import list_recipes

    defaults = TrainConfig()
    parser.add_argument("--config", metavar="FILE", help="JSON config to start from (flags override it)")
    parser.add_argument("--model", choices=list_models(), help=f"model name (default {defaults.model})")
    parser.add_argument("--hidden", type=_int_list, metavar="W,W", help="hidden sizes for mlp (default 32,16)")
    parser.add_argument("--dataset", choices=list_datasets(), help=f"dataset (default {defaults.dataset})")
    parser.add_argument("--epochs", type=int, help=f"epochs (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, help=f"batch size (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {defaults.lr})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimizer (default {defaults.optimizer})")
    parser.add_argument("--weight-decay", type=float, help=f"weight decay (default {defaults.weight_decay})")
    parser.add_argument("--seed", type=int, help=f"seed for initialisation and batch order (default {defaults.seed})")
    parser.add_argument("--val-size", type=int, help=f"validation images carved from train (default {defaults.val_size})")
    parser.add_argument("--train-size", type=int, help="train on the first N training images only (default all)")
    parser.add_argument("--device", choices=DEVICES, help=f"device (default {defaults.device})")
    parser.add_argument("--engine", choices=ENGINES, help=f"training engine (default {defaults.engine})")
    parser.add_argument("--threads", type=int, help="torch threads, 0 = torch's default (default 0)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/<model>-<timestamp>)")
    recipe = parser.add_argument_group("recipe (all off by default, so the seed recipe stays exact)")
    recipe.add_argument("--recipe", choices=list_recipes(), help="named preset for the model; flags given win")
    recipe.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default constant)")
    recipe.add_argument("--warmup", type=float, help="fraction of steps warming up (default 0)")
    recipe.add_argument("--label-smoothing", type=float, help="label smoothing (default 0)")
    recipe.add_argument("--dropout", type=float, help="dropout for models that have it (default: the model's)")
    recipe.add_argument("--keep-best", action="store_true", default=None,
                        help="end on the epoch with the best validation accuracy")
    recipe.add_argument("--teacher", metavar="RUN", help="distil from this trained run")
    recipe.add_argument("--distill-temperature", type=float, help="distillation temperature (default 4)")
    recipe.add_argument("--distill-weight", type=float, help="weight of the distillation loss (default 0.5)")
    augment = parser.add_argument_group("augmentation (batched, on the device; off by default)")
    augment.add_argument("--augment", action="store_true", help="turn on the preset: ±10°, ±2 px, ±10%% scale, ±10° shear")
    augment.add_argument("--augment-rotate", type=float, metavar="DEG", help="rotation range, ± degrees")
    augment.add_argument("--augment-translate", type=float, metavar="PX", help="shift range, ± pixels")
    augment.add_argument("--augment-scale", type=float, metavar="F", help="scale range, 1 ± F")
    augment.add_argument("--augment-shear", type=float, metavar="DEG", help="shear range, ± degrees")
    augment.add_argument("--augment-elastic-alpha", type=float, metavar="PX", help="elastic distortion strength (0 = off)")
    augment.add_argument("--augment-elastic-sigma", type=float, metavar="PX", help="elastic smoothness (default 4)")
    parser.add_argument("--resume", metavar="RUN", help="continue RUN from its last complete epoch "
                        "(its saved config; only --epochs may change)")


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


_TRAIN_FIELDS = ("model", "dataset", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "seed",
                 "val_size", "train_size", "device", "engine", "threads", "out", "schedule", "warmup",
                 "label_smoothing", "dropout", "keep_best", "teacher", "distill_temperature", "distill_weight",
                 "augment_rotate", "augment_translate", "augment_scale", "augment_shear", "augment_elastic_alpha",
                 "augment_elastic_sigma")


def _config_from_args(args):
    from .config import TrainConfig

    from .recipes import AUGMENT, apply_recipe

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    if args.model and args.model != config.model:
        config = config.replace(model=args.model, model_kwargs={})
    if args.recipe:
        config = apply_recipe(config, args.recipe)
    if args.augment:
        config = config.replace(**AUGMENT)
    changes = {name: getattr(args, name) for name in _TRAIN_FIELDS if getattr(args, name) is not None}
    if args.hidden is not None:
        changes["model_kwargs"] = {**config.model_kwargs, "hidden": args.hidden}
    return config.replace(**changes)


def _progress(total_epochs: int | None):
    """A tqdm bar over epochs on a terminal; nothing when stderr is not one."""
    if not sys.stderr.isatty() or os.environ.get("RANK", "0") != "0":
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total_epochs, unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def on_epoch(record):
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", acc=f"{record['train_accuracy']:.4f}",
                        val_acc=f"{record['val_accuracy'] or 0:.4f}")
        bar.update(1)
    return on_epoch, bar.close


def cmd_train(args) -> int:
    from .distributed import shutdown as shutdown_distributed
    from .train import resume, train

    if args.resume:
        changed = [name for name in _TRAIN_FIELDS + ("config", "hidden", "recipe")
                   if name != "epochs" and getattr(args, name) is not None]
        if changed:
            raise ConfigError(f"--resume continues the run's saved config; drop --{changed[0].replace('_', '-')}")
        on_epoch, close = _progress(args.epochs)
        try:
            run = resume(args.resume, epochs=args.epochs, on_epoch=on_epoch)
        finally:
            close()
    else:
        config = _config_from_args(args)
        on_epoch, close = _progress(config.epochs)
        try:
            run = train(config, on_epoch=on_epoch)
        finally:
            close()
    shutdown_distributed()
    if run.path is None:  # a non-zero rank under torchrun: rank 0 reports
        return 0
    metrics = run.metrics
    print(f"test accuracy {metrics['test_accuracy']:.2%} (validation {metrics['val_accuracy'] or 0:.2%}) — "
          f"{metrics['parameters']:,} parameters, {metrics['train_seconds']:.1f} s of training ({metrics['engine']})")
    if args.report:
        from .errors import RunError
        from .report import write_report

        try:
            print(f"report written to {write_report(run)}")
        except DigitlabError as error:
            raise RunError(f"run saved to {run.path}, but its report failed: {error}") from None
    print(f"run saved to {run.path}")
    return 0


def cmd_evaluate(args) -> int:
    from .runs import load_run

    run = load_run(args.run)
    metrics = run.evaluate(args.split)
    if args.robustness:
        metrics["robustness"] = run.robustness(args.split)
    if args.json:
        print(json.dumps({f"{args.split}_accuracy": metrics["accuracy"], **metrics}))
        return 0
    print(f"{args.split} accuracy {metrics['accuracy']:.2%} on {metrics['count']:,} images (loss {metrics['loss']:.4f})\n")
    print(f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for row in metrics["per_class"]:
        print(f"{row['class']:>12} {row['precision']:9.4f} {row['recall']:9.4f} {row['f1']:9.4f} {row['support']:8d}")
    print("\nconfusion matrix (rows: true, columns: predicted)")
    for row in metrics["confusion_matrix"]:
        print(" ".join(f"{count:5d}" for count in row))
    if args.robustness:
        print(f"\naccuracy on transformed {args.split} images")
        for name, value in metrics["robustness"].items():
            print(f"{name:>14} {value:8.2%}")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(write_report(args.run, digit=args.digit, seed=args.seed, out=args.out))
    return 0


def cmd_predict(args) -> int:
    from .predict import save_preprocessed
    from .runs import load_run

    results = load_run(args.run).predict(args.paths, top_k=args.top_k, batch_size=args.batch_size, errors="collect")
    if args.save_preprocessed:
        save_preprocessed(results, args.save_preprocessed)
    for result in results:
        if not result.ok:
            _log(f"digitlab: error: {result.source}: {result.error}")
    if args.json:
        print(json.dumps([result.to_dict() for result in results]))
    else:
        _print_predictions([result for result in results if result.ok], args.top_k)
    return 0 if all(result.ok for result in results) else 1


def _print_predictions(results, top_k: int) -> None:
    if not results:
        return
    width = max(len("file"), *(len(result.source) for result in results))
    extra = f"  top {top_k}" if top_k > 1 else ""
    print(f"{'file':<{width}}  {'label':>5}  {'confidence':>10}{extra}")
    for result in results:
        ranked = "  " + ", ".join(f"{label} {p:.1%}" for label, p in result.top_k) if top_k > 1 else ""
        print(f"{result.source:<{width}}  {result.label:>5}  {result.confidence:>10.1%}{ranked}")


def cmd_export(args) -> int:
    from .export import export_model

    report = export_model(args.run, args.format, out=args.out)
    print(f"wrote {report['path']} — verified against PyTorch on {report['count']:,} test digits: "
          f"max |logit difference| {report['max_abs_diff']:.2g}, identical predictions")
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    serve(args.run, host=args.host, port=args.port, access_log=args.access_log,
          on_ready=lambda message: print(message, flush=True))
    return 0


def cmd_tune(args) -> int:
    from .tune import tune

    result = tune(trials=args.trials, base=_tune_base(args), space=args.space, timeout=args.timeout,
                  storage=args.storage, study=args.study, n_jobs=args.n_jobs, pruner=args.pruner, seed=args.seed,
                  out=args.out, on_trial=_print_trial, log=_log)
    print(f"study {result.study}: {result.finished} finished trials ({result.pruned} pruned, {result.new} new)", end="")
    if result.best_trial is None:
        print("; no complete trial yet")
    else:
        print(f"; best validation accuracy {result.best_value:.2%} (trial {result.best_trial})")
        print(f"retrain it and test it with: digitlab train --config {result.folder / 'best.json'}")
    print(f"outputs in {result.folder}: " + ", ".join(path.name for path in result.files))
    return 0


def _tune_base(args):
    from .config import TrainConfig
    from .tune import base_config

    if args.config:
        config = TrainConfig.from_file(args.config)
        if args.model and args.model != config.model:
            config = config.replace(model=args.model, model_kwargs={})
    else:
        config = base_config(args.model or "mlp")
    changes = {name: getattr(args, name) for name in ("dataset", "train_size", "val_size", "threads", "device")
               if getattr(args, name) is not None}
    return config.replace(**changes)


def _print_trial(record: dict) -> None:
    """One line per finished trial: number, outcome, duration, parameters, and the study's best so far."""
    params = " ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                      for name, value in record["params"].items())
    value = f"{record['value']:.2%}" if record["value"] is not None else "none"
    if record["state"] == "pruned":
        outcome = f"pruned after epoch {record['epochs']} (val {value})"
    else:
        outcome = f"val {value} after {record['epochs']} epoch{'s' if record['epochs'] != 1 else ''}"
    best = "no best yet"
    if record["best_trial"] is not None:
        best = f"best {record['best_value']:.2%} (trial {record['best_trial']})"
    print(f"trial {record['number']}: {outcome}, {record['seconds']:.1f} s | {params} | {best}", flush=True)


def cmd_data_fetch(args) -> int:
    from .data import dataset_info
    from .fetch import fetch

    paths = fetch(dataset_info(args.dataset), args.root, log=_log)
    for path in paths.values():
        print(path)
    return 0


def cmd_data_info(args) -> int:
    import torch

    from .data import load_dataset

    data = load_dataset(args.dataset, root=args.root, val_size=args.val_size, log=_log)
    splits = data.splits()
    counts = {name: torch.bincount(split.labels, minlength=len(data.classes)).tolist() for name, split in splits.items()}
    print(f"{data.name}: " + ", ".join(f"{name} {len(split):,}" for name, split in splits.items()))
    print(f"{'class':>12} " + " ".join(f"{name:>8}" for name in splits))
    for index, name in enumerate(data.classes):
        print(f"{name:>12} " + " ".join(f"{counts[split][index]:8d}" for split in splits))
    return 0


def cmd_experiment(args) -> int:
    from .experiment import augmentation_study

    result = augmentation_study(seeds=args.seeds, models=tuple(args.models), recipe=args.recipe,
                                epochs=args.epochs, out=args.out, log=_log)
    from .experiment import markdown_table
    print(markdown_table(result["summary"]), end="")
    print(f"results in {args.out}/results.json, results.md and plot.png")
    return 0


def cmd_augment_preview(args) -> int:
    import torch

    from .augment import augment_batch
    from .config import TrainConfig
    from .data import load_dataset, to_float
    from .recipes import AUGMENT
    from .runs import atomic_write
    from .viz import augmentation_preview

    values = {name: getattr(args, name) for name in AUGMENT if getattr(args, name) is not None}
    config = TrainConfig(**{**AUGMENT, **values}, augment_elastic_alpha=args.augment_elastic_alpha or 0.0)
    augmentation = config.augmentation()
    data = load_dataset(args.dataset)
    index = int((data.train.labels == args.digit).nonzero()[0]) if args.digit is not None else args.index
    original = to_float(data.train.images[index])
    draws = augment_batch(original.unsqueeze(0).expand(args.draws, -1, -1, -1), augmentation,
                          torch.Generator().manual_seed(args.seed))
    description = (f"±{augmentation.rotate:g}°, ±{augmentation.translate:g} px, scale ±{augmentation.scale:g}, "
                   f"shear ±{augmentation.shear:g}°" + (f", elastic α {augmentation.elastic_alpha:g}"
                                                        if augmentation.elastic_alpha else ""))
    figure = augmentation_preview(original, draws, description)
    atomic_write(Path(args.out), lambda temp: figure.savefig(temp, format="png"))
    print(args.out)
    return 0


def cmd_models(args) -> int:
    from .models import count_parameters, create_model, list_models

    for name in list_models():
        print(f"{name:12} {count_parameters(create_model(name)):>10,} parameters")
    return 0


def cmd_recipes(args) -> int:
    from .recipes import RECIPES, recipe_settings

    for name in [args.name] if args.name else sorted(RECIPES):
        for model in sorted(RECIPES[name]):
            settings = recipe_settings(name, model)
            print(f"{name:5} {model:9} " + " ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                                                   for key, value in settings.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .data import list_datasets
    from .models import list_models
    from .recipes import list_recipes

    parser = _Parser(prog="digitlab", description="Train, evaluate and explain MNIST-like digit classifiers.",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a model and save a run folder")
    _add_train_arguments(train)
    train.add_argument("--report", action="store_true", help="write the run's visual report (RUN/report) after training")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="report a run's accuracy, per-class scores and confusion matrix")
    evaluate.add_argument("run", help="run folder")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test", help="split to evaluate")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--robustness", action="store_true",
                          help="also report accuracy on the split rotated ±15°/±30°, shifted ±3 px, scaled 0.8")
    evaluate.set_defaults(handler=cmd_evaluate)

    report = commands.add_parser("report", help="write RUN/report/index.html: pictures of the data, training, "
                                                "predictions, calibration and the model's insides")
    report.add_argument("run", help="run folder")
    report.add_argument("--digit", type=int, default=7, help="class index whose training examples are shown")
    report.add_argument("--seed", type=int, default=0, help="seed of the random sample of test digits")
    report.add_argument("--out", metavar="DIR", help="report folder (default RUN/report)")
    report.set_defaults(handler=cmd_report)

    data = commands.add_parser("data", help="fetch datasets and describe them")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    for name, handler, text in (("fetch", cmd_data_fetch, "download and verify the raw files into the cache"),
                                ("info", cmd_data_info, "counts and class distribution per split")):
        sub = data_commands.add_parser(name, help=text)
        sub.add_argument("--dataset", choices=list_datasets(), default="mnist")
        sub.add_argument("--root", help="cache folder (default $DIGITLAB_DATA or ~/.cache/digitlab)")
        sub.set_defaults(handler=handler)
        if name == "info":
            sub.add_argument("--val-size", type=int, default=5000, help="validation images carved from train")

    predict = commands.add_parser("predict", help="classify image files (photos, scans) with a run's model")
    predict.add_argument("run", help="run folder (or its model.safetensors)")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders of them")
    predict.add_argument("--json", action="store_true", help="print a JSON list, one object per input (in order)")
    predict.add_argument("--top-k", type=int, default=1, metavar="K",
                         help="also show the K most likely classes (default 1)")
    predict.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 image the model saw per file")
    predict.add_argument("--batch-size", type=int, default=512, help="images per forward pass (default 512)")
    predict.set_defaults(handler=cmd_predict)

    export = commands.add_parser("export", help="export a run's model to ONNX or TorchScript, verified")
    export.add_argument("run", help="run folder (or its model.safetensors)")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="file format (default onnx)")
    export.add_argument("--out", metavar="FILE",
                        help="destination (default RUN/model.onnx or RUN/model.torchscript.pt)")
    export.set_defaults(handler=cmd_export)

    experiment = commands.add_parser("experiment", help="studies over many runs: what augmentation buys")
    experiment.add_argument("study", choices=("augmentation",), help="the study to run")
    experiment.add_argument("--seeds", type=int, default=3, help="seeds per condition")
    experiment.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=list_models(), help="models to compare")
    experiment.add_argument("--recipe", default="fast", choices=list_recipes(), help="recipe of every run")
    experiment.add_argument("--epochs", type=int, help="epochs of every run (default: the recipe's)")
    experiment.add_argument("--out", default="experiments/augmentation", help="output folder")
    experiment.set_defaults(handler=cmd_experiment)

    preview = commands.add_parser("augment-preview", help="draw one digit under 16 random augmentation draws")
    preview.add_argument("--digit", type=int, help="use the first training image of this class")
    preview.add_argument("--index", type=int, default=0, help="training image to use (when no --digit)")
    preview.add_argument("--draws", type=int, default=16, help="number of random draws")
    preview.add_argument("--seed", type=int, default=0, help="seed of the draws")
    preview.add_argument("--dataset", choices=list_datasets(), default="mnist")
    for name, text in (("rotate", "rotation, ± degrees"), ("translate", "shift, ± pixels"), ("scale", "scale, 1 ± F"),
                       ("shear", "shear, ± degrees"), ("elastic-alpha", "elastic strength in pixels")):
        preview.add_argument(f"--augment-{name}", type=float, help=f"{text} (default: the --augment preset)")
    preview.add_argument("--out", default="augment-preview.png", help="PNG to write")
    preview.set_defaults(handler=cmd_augment_preview)

    serve = commands.add_parser("serve", help="web demo: draw a digit in the browser and watch the model decide")
    serve.add_argument("run", help="run folder (or its model.safetensors)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on, 0 = any free port (default 8000)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=cmd_serve)
    _add_tune_parser(commands)

    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(handler=cmd_models)
    recipes = commands.add_parser("recipes", help="show what each --recipe sets, per model")
    recipes.add_argument("name", nargs="?", choices=list_recipes(), help="only this recipe")
    recipes.set_defaults(handler=cmd_recipes)
    return parser


def _add_tune_parser(commands) -> None:
    from .config import DEVICES
    from .data import list_datasets
    from .models import list_models
    from .tune import PRUNERS

    tune = commands.add_parser("tune", help="search hyperparameters with Optuna on the validation split "
                                            "(resumable, prunable, parallel; the test set is never used)")
    tune.add_argument("--model", choices=list_models(), help="model to tune (default mlp, or the --config's)")
    tune.add_argument("--trials", type=int, default=20, metavar="N",
                      help="finished trials (complete or pruned) the study should hold in all, over every worker "
                           "(default 20)")
    tune.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    tune.add_argument("--storage", metavar="URL", help="Optuna storage URL, e.g. postgresql://user:pass@host/db "
                      "(default sqlite:///OUT/study.db)")
    tune.add_argument("--study", metavar="NAME", help="study name (default: the model name)")
    tune.add_argument("--n-jobs", type=int, default=1, metavar="K",
                      help="trials at once in this process (threads share the cores; for more, run more processes; "
                           "default 1)")
    tune.add_argument("--space", metavar="FILE", help="TOML or JSON file overriding parts of the search space")
    tune.add_argument("--pruner", choices=PRUNERS, default="median",
                      help="stop unpromising trials early (default median)")
    tune.add_argument("--seed", type=int, help="seed of the sampler (default random)")
    tune.add_argument("--out", metavar="DIR", help="study folder for best.json, trials.csv and figures "
                      "(default tunes/STUDY)")
    base = tune.add_argument_group("what every trial starts from (default: the model's fast recipe)")
    base.add_argument("--config", metavar="FILE", help="JSON config to start from")
    base.add_argument("--dataset", choices=list_datasets(), help="dataset (default mnist)")
    base.add_argument("--train-size", type=int, metavar="N", help="train on the first N training images only "
                      "(default all)")
    base.add_argument("--val-size", type=int, metavar="N", help="validation images carved from train (default 5000)")
    base.add_argument("--threads", type=int, metavar="N", help="torch threads per process, 0 = torch's default")
    base.add_argument("--device", choices=DEVICES, help="device (default auto)")
    tune.set_defaults(handler=cmd_tune)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"digitlab: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        return args.handler(args)
    except DigitlabError as error:
        print(f"digitlab: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
