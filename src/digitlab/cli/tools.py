"""Commands about data, models, recipes and studies: data fetch/info, models, recipes, experiment, augment-preview."""

from __future__ import annotations

from pathlib import Path

from .common import DATASETS, MODELS, RECIPES, Parser, format_settings, log


def add_parsers(commands) -> None:
    data = commands.add_parser("data", help="fetch datasets and describe them")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    for name, handler, text in (
        ("fetch", cmd_data_fetch, "download and verify the raw files into the cache"),
        ("info", cmd_data_info, "counts and class distribution per split"),
    ):
        sub = data_commands.add_parser(name, help=text)
        sub.add_argument("--dataset", choices=DATASETS, metavar="DATASET", default="mnist", help="%(choices)s")
        sub.add_argument("--root", help="cache folder (default $DIGITLAB_DATA or ~/.cache/digitlab)")
        sub.set_defaults(handler=handler)
        if name == "info":
            sub.add_argument("--val-size", type=int, default=5000, help="validation images carved from train")

    experiment = commands.add_parser("experiment", help="studies over many runs: what augmentation buys")
    experiment.add_argument("study", choices=("augmentation",), help="the study to run")
    experiment.add_argument("--seeds", type=int, default=3, help="seeds per condition")
    experiment.add_argument(
        "--models",
        nargs="+",
        default=["mlp", "cnn"],
        choices=MODELS,
        metavar="MODEL",
        help="models to compare, of %(choices)s",
    )
    experiment.add_argument(
        "--recipe", default="fast", choices=RECIPES, metavar="RECIPE", help="recipe of every run, one of %(choices)s"
    )
    experiment.add_argument("--epochs", type=int, help="epochs of every run (default: the recipe's)")
    experiment.add_argument("--out", default="experiments/augmentation", help="output folder")
    experiment.set_defaults(handler=cmd_experiment)

    preview = commands.add_parser("augment-preview", help="draw one digit under 16 random augmentation draws")
    preview.add_argument("--digit", type=int, help="use the first training image of this class")
    preview.add_argument("--index", type=int, default=0, help="training image to use (when no --digit)")
    preview.add_argument("--draws", type=int, default=16, help="number of random draws")
    preview.add_argument("--seed", type=int, default=0, help="seed of the draws")
    preview.add_argument("--dataset", choices=DATASETS, metavar="DATASET", default="mnist", help="%(choices)s")
    for name, text in (
        ("rotate", "rotation, ± degrees"),
        ("translate", "shift, ± pixels"),
        ("scale", "scale, 1 ± F"),
        ("shear", "shear, ± degrees"),
        ("elastic-alpha", "elastic strength in pixels"),
    ):
        preview.add_argument(f"--augment-{name}", type=float, help=f"{text} (default: the --augment preset)")
    preview.add_argument("--out", default="augment-preview.png", help="PNG to write")
    preview.set_defaults(handler=cmd_augment_preview)

    models = commands.add_parser("models", help="list the registered models")
    models.set_defaults(handler=cmd_models)
    recipes = commands.add_parser("recipes", help="show what each --recipe sets, per model")
    recipes.add_argument(
        "name", nargs="?", choices=RECIPES, metavar="NAME", help="only this recipe, one of %(choices)s"
    )
    recipes.set_defaults(handler=cmd_recipes)


def cmd_data_fetch(args) -> int:
    from ..data.datasets import dataset_info
    from ..data.fetch import fetch

    paths = fetch(dataset_info(args.dataset), args.root, log=log)
    for path in paths.values():
        print(path)
    return 0


def cmd_data_info(args) -> int:
    import torch

    from ..data.datasets import load_dataset

    data = load_dataset(args.dataset, root=args.root, val_size=args.val_size, log=log)
    splits = data.splits()
    counts = {
        name: torch.bincount(split.labels, minlength=len(data.classes)).tolist() for name, split in splits.items()
    }
    print(f"{data.name}: " + ", ".join(f"{name} {len(split):,}" for name, split in splits.items()))
    print(f"{'class':>12} " + " ".join(f"{name:>8}" for name in splits))
    for index, name in enumerate(data.classes):
        print(f"{name:>12} " + " ".join(f"{counts[split][index]:8d}" for split in splits))
    return 0


def cmd_experiment(args) -> int:
    from ..training.experiment import augmentation_study, markdown_table

    result = augmentation_study(
        seeds=args.seeds, models=tuple(args.models), recipe=args.recipe, epochs=args.epochs, out=args.out, log=log
    )
    print(markdown_table(result["summary"]), end="")
    print(f"results in {args.out}/results.json, results.md and plot.png")
    return 0


def cmd_augment_preview(args) -> int:
    import torch

    from ..config import TrainConfig
    from ..data.augment import augment_batch
    from ..data.datasets import load_dataset, to_float
    from ..figures.predictions import augmentation_preview
    from ..files import atomic_write
    from ..training.recipes import AUGMENT

    values = {name: getattr(args, name) for name in AUGMENT if getattr(args, name) is not None}
    config = TrainConfig(**{**AUGMENT, **values}, augment_elastic_alpha=args.augment_elastic_alpha or 0.0)
    augmentation = config.augmentation()
    data = load_dataset(args.dataset)
    index = int((data.train.labels == args.digit).nonzero()[0]) if args.digit is not None else args.index
    original = to_float(data.train.images[index])
    draws = augment_batch(
        original.unsqueeze(0).expand(args.draws, -1, -1, -1), augmentation, torch.Generator().manual_seed(args.seed)
    )
    description = (
        f"±{augmentation.rotate:g}°, ±{augmentation.translate:g} px, scale ±{augmentation.scale:g}, "
        f"shear ±{augmentation.shear:g}°"
        + (f", elastic α {augmentation.elastic_alpha:g}" if augmentation.elastic_alpha else "")
    )
    figure = augmentation_preview(original, draws, description)
    atomic_write(Path(args.out), lambda temp: figure.savefig(temp, format="png"))
    print(args.out)
    return 0


def cmd_models(args) -> int:
    from ..models.nets import count_parameters, create_model, list_models

    for name in list_models():
        print(f"{name:12} {count_parameters(create_model(name)):>10,} parameters")
    return 0


def cmd_recipes(args) -> int:
    from ..training.recipes import RECIPES as SETTINGS
    from ..training.recipes import recipe_settings

    for name in [args.name] if args.name else sorted(SETTINGS):
        for model in sorted(SETTINGS[name]):
            print(f"{name:5} {model:9} {format_settings(recipe_settings(name, model))}")
    return 0
