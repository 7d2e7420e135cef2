"""Figures of the data and of training: the digits, the class balance, the training curves, and
what augmentation does. Each function takes tensors (or records) and returns a matplotlib Figure;
`digitlab.figures.predictions` re-exports them with the figures of predictions.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .style import TRAIN_COLOR, VAL_COLOR, digit_grid, new_figure, styled


def training_digits(images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...], count: int = 25) -> Figure:
    """The first `count` training digits with their labels."""
    count = min(count, len(labels))
    return digit_grid(
        images[:count],
        [f"label {classes[int(label)]}" for label in labels[:count]],
        f"The first {count} training digits",
    )


def digit_examples(
    images: torch.Tensor, labels: torch.Tensor, digit: int, classes: tuple[str, ...], count: int = 16
) -> Figure:
    """The first `count` examples of class `digit`, in a 4-column grid."""
    index = (labels == digit).nonzero().squeeze(1)[:count]
    return digit_grid(
        images[index], [f"#{int(i)}" for i in index], f"{len(index)} training examples of {classes[digit]}", columns=4
    )


@styled
def class_distribution(labels_by_split: dict[str, torch.Tensor], classes: tuple[str, ...]) -> Figure:
    """Share of each class within each split, as grouped bars (so splits of different sizes compare)."""
    figure = new_figure(9, 4)
    figure.suptitle("Class distribution per split")
    axes = figure.add_subplot()
    width = 0.8 / max(len(labels_by_split), 1)
    positions = np.arange(len(classes))
    for number, (name, labels) in enumerate(labels_by_split.items()):
        counts = torch.bincount(labels.cpu(), minlength=len(classes)).double()
        share = (counts / counts.sum().clamp(min=1)).numpy()
        axes.bar(
            positions + (number - (len(labels_by_split) - 1) / 2) * width,
            share,
            width,
            label=f"{name} ({len(labels):,} images)",
        )
    axes.set_xticks(positions, classes, rotation=30 if max(map(len, classes)) > 2 else 0)
    axes.set_xlabel("class")
    axes.set_ylabel("share of the split")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(0, axes.get_ylim()[1] * 1.15)
    axes.legend(loc="upper center", ncols=len(labels_by_split))
    return figure


@styled
def training_curves(history: list[dict]) -> Figure:
    """Loss and accuracy per epoch, training and validation on the same axes (validation only if present)."""
    figure = new_figure(10, 4)
    figure.suptitle("Training curves")
    epochs = [record["epoch"] for record in history]
    for axes, metric, label in zip(
        figure.subplots(1, 2), ("loss", "accuracy"), ("cross-entropy loss", "accuracy"), strict=True
    ):
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            values = [record.get(f"{split}_{metric}") for record in history]
            if all(value is not None for value in values):
                axes.plot(
                    epochs,
                    values,
                    marker="o",
                    markersize=4,
                    color=color,
                    label="training" if split == "train" else "validation",
                )
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.set_title(label.capitalize())
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
        if metric == "accuracy":
            axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    return figure


def augmentation_preview(original: torch.Tensor, draws: torch.Tensor, description: str) -> Figure:
    """One digit (1, 28, 28) under random augmentation draws (K, 1, 28, 28), the original first."""
    images = torch.cat([original.unsqueeze(0).float(), draws.float()])
    titles = ["original"] + [f"draw {number}" for number in range(1, len(draws) + 1)]
    return digit_grid(images, titles, f"Augmentation: {description}", columns=6)


@styled
def augmentation_study(summary: list[dict]) -> Figure:
    """Mean ± std test accuracy, clean and under each fixed transform, per (model, augmentation) condition."""
    names = list(summary[0]["robustness_mean"])
    figure = new_figure(max(8.0, 1.3 * len(names) + 2), 4.2)
    figure.suptitle("What augmentation buys: test accuracy, clean and transformed (mean ± std over seeds)")
    axes = figure.add_subplot()
    width = 0.8 / len(summary)
    for number, condition in enumerate(summary):
        offsets = np.arange(len(names)) + (number - (len(summary) - 1) / 2) * width
        axes.bar(
            offsets,
            [condition["robustness_mean"][name] for name in names],
            width,
            yerr=[condition["robustness_std"][name] for name in names],
            capsize=2,
            label=f"{condition['model']}, {'augmented' if condition['augment'] else 'no augmentation'}",
        )
    axes.set_xticks(np.arange(len(names)), names, rotation=20)
    axes.set_ylabel("test accuracy")
    axes.set_ylim(0, 1)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(summary), fontsize=9)
    return figure
