"""The doctor's pictures: the evidence behind each finding (curves against a uniform guess, what the
first layer is fed, which units fire, how much gradient each layer gets, real-world conditions, the
learning-rate range test) and contact sheets of suspect digits."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .style import TRAIN_COLOR, VAL_COLOR, WRONG, digit_grid, new_figure, styled

GUIDE = "#555555"


@styled
def loss_curves(history: list[dict], classes: int) -> Figure:
    """Loss and accuracy per epoch with the yardsticks of a uniform guess: ln(classes) and 1/classes."""
    figure = new_figure(10, 4)
    figure.suptitle("Training curves against a uniform guess")
    epochs = [record["epoch"] for record in history]
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for split, color, name in (("train", TRAIN_COLOR, "training"), ("val", VAL_COLOR, "validation")):
        for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            values = [record.get(f"{split}_{metric}") for record in history]
            if all(value is not None for value in values):
                axes.plot(epochs, values, marker="o", markersize=4, color=color, label=name)
    loss_axes.axhline(math.log(classes), color=GUIDE, linestyle="--", label=f"uniform guess, ln {classes}")
    accuracy_axes.axhline(1 / classes, color=GUIDE, linestyle="--", label="chance")
    for axes, label in ((loss_axes, "cross-entropy loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    accuracy_axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    return figure


@styled
def input_values(values: torch.Tensor, layer: str) -> Figure:
    """Histogram of the values the first layer is fed (a sample of them)."""
    figure = new_figure(6, 3.5)
    figure.suptitle(f"What the first layer ({layer}) is fed")
    axes = figure.add_subplot()
    axes.hist(values.numpy(), bins=60, color=TRAIN_COLOR, log=True)
    axes.axvspan(0, 1, color="#2e9e44", alpha=0.12, label="[0, 1]")
    axes.set_xlabel("input value")
    axes.set_ylabel("count (log)")
    axes.legend()
    return figure


@styled
def unit_activity(layers: list[dict]) -> Figure:
    """Per ReLU layer, each unit's share of digits it fires on, sorted; units that never fire in red."""
    figure = new_figure(4 + 2.5 * len(layers), 3.8)
    figure.suptitle("How often each unit fires (red: never)")
    for axes, layer in zip(np.atleast_1d(figure.subplots(1, len(layers))), layers, strict=True):
        shares = np.sort(layer["fires"].numpy())
        colors = [WRONG if share == 0 else TRAIN_COLOR for share in shares]
        axes.bar(np.arange(len(shares)), np.maximum(shares, 0.01), color=colors, width=1.0)
        axes.set_title(layer["layer"], fontsize=9)
        axes.set_xlabel("unit (sorted)")
        axes.set_ylim(0, 1)
        axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    return figure


@styled
def gradient_flow(layers: list[dict]) -> Figure:
    """Per weighted layer, the gradient's norm relative to the weights' (log scale); zero in red."""
    figure = new_figure(max(6, 0.9 * len(layers) + 3), 4)
    figure.suptitle("Gradient reaching each layer (|gradient| / |weights|)")
    axes = figure.add_subplot()
    relative = np.array([layer["relative"] for layer in layers])
    shown = np.where(relative > 0, relative, np.nan)
    floor = np.nanmin(shown) / 10 if np.isfinite(shown).any() else 1e-6
    axes.bar(
        range(len(layers)),
        np.where(relative > 0, relative, floor),
        color=[WRONG if value == 0 else TRAIN_COLOR for value in relative],
    )
    axes.set_yscale("log")
    axes.set_xticks(range(len(layers)), [layer["layer"].split(" (")[0] for layer in layers], rotation=30, ha="right")
    axes.set_ylabel("relative gradient (log)")
    return figure


@styled
def real_world(val_accuracy: float, conditions: dict[str, float]) -> Figure:
    """Accuracy per real-world condition against the validation digits' accuracy."""
    figure = new_figure(7, 4.5)
    figure.suptitle("Real-world pictures against validation digits")
    axes = figure.add_subplot()
    names = sorted(conditions, key=conditions.__getitem__)
    axes.barh(names, [conditions[name] for name in names], color=VAL_COLOR)
    axes.axvline(val_accuracy, color=GUIDE, linestyle="--", label=f"validation digits {val_accuracy:.1%}")
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlim(0, 1)
    axes.legend(loc="lower right")
    return figure


@styled
def lr_range(lrs: list[float], losses: list[float], low: float, high: float, suggested: float) -> Figure:
    """The learning-rate range test: smoothed loss against the rate (log), the good range shaded."""
    figure = new_figure(7, 4.5)
    figure.suptitle("Learning-rate range test")
    axes = figure.add_subplot()
    axes.plot(lrs, losses, color=TRAIN_COLOR)
    axes.axvspan(low, high, color="#2e9e44", alpha=0.15, label=f"good range {low:.2g} to {high:.2g}")
    axes.axvline(suggested, color=GUIDE, linestyle="--", label=f"suggested {suggested:.2g}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log)")
    axes.set_ylabel("training loss (smoothed)")
    top = losses[0] * 1.5 if losses else 1
    axes.set_ylim(min(losses, default=0) * 0.9, top)
    axes.legend()
    return figure


def suspects_sheet(images: torch.Tensor, titles: list[str], title: str) -> Figure:
    """A contact sheet of suspect digits, each titled with its label and what the model says."""
    return digit_grid(images, titles, title, colors=[WRONG] * len(titles), columns=5)
