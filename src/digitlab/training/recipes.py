"""Named training presets per model, and the learning rate as a pure function of the step.

A recipe only changes TrainConfig fields, so `config.json` records its resolved values like any
other setting. Flags given on the command line win over the recipe.
"""

from __future__ import annotations

import math

from ..config import TrainConfig
from ..data.augment import PRESET
from ..errors import ConfigError

AUGMENT = {
    "augment_rotate": PRESET.rotate,
    "augment_translate": PRESET.translate,
    "augment_scale": PRESET.scale,
    "augment_shear": PRESET.shear,
}

_ONE_CYCLE = {"optimizer": "adamw", "schedule": "onecycle", "warmup": 0.25}
# half the preset's ranges and no shear: the 25.8k-parameter seed MLP cannot fit the full preset's variety
_LIGHT_AUGMENT = {**{name: value / 2 for name, value in AUGMENT.items()}, "augment_shear": 0.0}

RECIPES: dict[str, dict[str, dict]] = {
    # fewest seconds to a good model
    "fast": {
        "mlp": {**_ONE_CYCLE, "batch_size": 256, "lr": 3e-2, "epochs": 5, "weight_decay": 1e-4},
        "cnn": {**_ONE_CYCLE, "batch_size": 128, "lr": 4e-3, "epochs": 2, "weight_decay": 5e-4, "label_smoothing": 0.1},
        "cnn-tiny": {**_ONE_CYCLE, "batch_size": 128, "lr": 1e-2, "epochs": 3, "weight_decay": 1e-4},
        "lenet5": {**_ONE_CYCLE, "batch_size": 128, "lr": 3e-3, "epochs": 3, "weight_decay": 1e-4},
        # the time-to-99.0% record (benchmarks/records.py): the fastest public GPU recipe's optimizer
        # (Adam betas 0.7, 0.9; one-cycle to 1e-2; batch 256), its net with a strided first conv in
        # place of the first max-pool, two epochs, label smoothing, and bf16 autocast where the CPU has it
        "cnn-cpu": {
            **_ONE_CYCLE,
            "model_kwargs": {"stride": 2},
            "betas": [0.7, 0.9],
            "batch_size": 256,
            "lr": 1e-2,
            "epochs": 2,
            "label_smoothing": 0.1,
            "precision": "bf16",
        },
    },
    # best validation accuracy within minutes on a CPU
    "best": {
        "mlp": {
            **_ONE_CYCLE,
            **_LIGHT_AUGMENT,
            "batch_size": 128,
            "lr": 5e-3,
            "epochs": 60,
            "weight_decay": 1e-4,
            "keep_best": True,
        },
        # 1.5x the default widths (164k parameters): with augmentation the default cnn runs short of capacity
        "cnn": {
            **_ONE_CYCLE,
            **AUGMENT,
            "model_kwargs": {"channels": [24, 48, 96]},
            "batch_size": 128,
            "lr": 4e-3,
            "epochs": 20,
            "weight_decay": 5e-4,
            "label_smoothing": 0.1,
            "keep_best": True,
        },
        "cnn-tiny": {
            **_ONE_CYCLE,
            **AUGMENT,
            "batch_size": 128,
            "lr": 1e-2,
            "epochs": 30,
            "weight_decay": 1e-4,
            "keep_best": True,
        },
        "lenet5": {
            **_ONE_CYCLE,
            **AUGMENT,
            "batch_size": 128,
            "lr": 3e-3,
            "epochs": 20,
            "weight_decay": 1e-4,
            "keep_best": True,
        },
        "cnn-cpu": {
            **_ONE_CYCLE,
            **AUGMENT,
            "model_kwargs": {"channels": [32, 64]},
            "batch_size": 256,
            "lr": 4e-3,
            "epochs": 30,
            "label_smoothing": 0.1,
            "precision": "bf16",
            "keep_best": True,
        },
    },
}


# What real pictures do to a digit beyond MNIST's variety, after preprocessing: heavier or lighter
# pens, blur from focus or upscaling, fainter ink, sensor noise (see digitlab.inference.realworld).
# Mild: preprocessing already brings pens into MNIST's width range and ink to full intensity.
_REAL_WORLD = {"augment_thickness": 1.0, "augment_blur": 0.5, "augment_contrast": 0.2, "augment_noise": 0.03}
RECIPES["robust"] = {model: {**settings, **AUGMENT, **_REAL_WORLD} for model, settings in RECIPES["best"].items()}
RECIPES["robust"]["mlp"].update(_LIGHT_AUGMENT)
RECIPES["robust"]["cnn"]["epochs"] = 12  # the shipped model's recipe: 12 epochs fit a CPU budget of minutes


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def recipe_settings(name: str, model: str) -> dict:
    """The TrainConfig fields that recipe `name` sets for `model`."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r} (known: {', '.join(list_recipes())})")
    if model not in RECIPES[name]:
        raise ConfigError(f"recipe {name!r} has no preset for model {model!r}")
    return dict(RECIPES[name][model])


def apply_recipe(config: TrainConfig, name: str) -> TrainConfig:
    """`config` with the preset `name` for its model applied (and recorded in config.recipe)."""
    return config.replace(**recipe_settings(name, config.model), recipe=name)


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    """The learning rate for optimizer step `step` (0-based) of `total_steps`.

    constant: lr (after an optional linear warm-up from lr/warm-up steps); cosine: the same warm-up,
    then cosine decay to 0; onecycle: linear rise from lr/25 to lr over the warm-up, then cosine
    decay to lr/25/1e4.
    """
    peak, warm = config.lr, int(config.warmup * total_steps)
    start = peak / 25 if config.schedule == "onecycle" else peak / max(warm, 1)
    if step < warm:
        return start + (peak - start) * step / warm
    if config.schedule == "constant":
        return peak
    floor = peak / 25 / 1e4 if config.schedule == "onecycle" else 0.0
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
