"""Every figure of a report by name; the figures of predictions live here: each takes tensors and returns a Figure.

Figures are built with `matplotlib.figure.Figure`, never pyplot (digitlab.figures holds the house
style and the shared drawing primitives); save one with `figure.savefig(path)`. Images are uint8
(N, 1, 28, 28) or float in [0, 1]; probabilities are softmax outputs (N, C). The pictures of a
model's insides (`first_layer`, `activations`) live in `digitlab.figures.model`, which dispatches on the
model type; the figures of the data and of training live in `digitlab.figures.dataset`. Both are
re-exported here, so `viz` names every figure of a report.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from ..inference.evaluate import (
    calibration,
    confident_mistakes,
    misclassified,
    most_confused_pairs,
    uncertain_predictions,
)
from ..inference.evaluate import confusion_matrix as count_confusion
from .dataset import augmentation_preview as augmentation_preview
from .dataset import augmentation_study as augmentation_study
from .dataset import class_distribution as class_distribution
from .dataset import digit_examples as digit_examples
from .dataset import training_curves as training_curves  # re-exported
from .dataset import training_digits as training_digits
from .explanations import filter_digits as filter_digits
from .explanations import saliency_grid as saliency_grid
from .model import activations as activations  # re-exported
from .model import first_layer as first_layer
from .style import RIGHT, TRAIN_COLOR, WRONG, Mosaic, digit_grid, new_figure, note_figure, pixels, styled, tile_figure


def prediction_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor,
    index: torch.Tensor,
    classes: tuple[str, ...],
    title: str,
    empty: str = "none",
) -> Figure:
    """The digits at `index`, each titled true / predicted / confidence and framed green (right) or red (wrong)."""
    if len(index) == 0:
        return note_figure(title, empty)
    confidence, predicted = probabilities[index].max(1)
    titles, colors = [], []
    for true, guess, conf in zip(labels[index].tolist(), predicted.tolist(), confidence.tolist(), strict=True):
        short = len(classes[true]) + len(classes[guess]) <= 8  # fits one line under a tile
        names = f"true {classes[true]}{' · ' if short else chr(10)}pred {classes[guess]}"
        titles.append(f"{names}\n{conf:.1%} sure")
        colors.append(RIGHT if true == guess else WRONG)
    return digit_grid(images[index], titles, title, colors)


def confidently_wrong(images, labels, probabilities, classes, threshold: float = 0.8, count: int = 25) -> Figure:
    """Wrong predictions made with max probability above `threshold`, most confident first."""
    index = confident_mistakes(probabilities, labels, threshold)
    return prediction_grid(
        images,
        labels,
        probabilities,
        index[:count],
        classes,
        f"Confidently wrong (> {threshold:.0%} sure): {min(count, len(index))} of {len(index)}",
        f"no test digit is wrong with more than {threshold:.0%} confidence",
    )


def uncertain(images, labels, probabilities, classes, threshold: float = 0.5, count: int = 25) -> Figure:
    """Predictions whose max probability is below `threshold`, in test-set order."""
    index = uncertain_predictions(probabilities, threshold)
    return prediction_grid(
        images,
        labels,
        probabilities,
        index[:count],
        classes,
        f"Uncertain (< {threshold:.0%} sure): {min(count, len(index))} of {len(index)}",
        f"no test digit is predicted with less than {threshold:.0%} confidence",
    )


def misclassified_overview(images, labels, probabilities, classes, count: int = 25) -> Figure:
    """The first `count` misclassified digits of the set, in order."""
    index = misclassified(probabilities, labels)
    return prediction_grid(
        images,
        labels,
        probabilities,
        index[:count],
        classes,
        f"The first {min(count, len(index))} of {len(index)} misclassified digits",
        "every digit is classified correctly",
    )


def random_sample(images, labels, probabilities, classes, count: int = 25, seed: int = 0) -> Figure:
    """`count` digits drawn without replacement with a generator seeded by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(labels), generator=generator)[:count].to(labels.device)
    return prediction_grid(
        images, labels, probabilities, index, classes, f"A random sample of {len(index)} digits (seed {seed})"
    )


@styled
def confusion_matrix(confusion: torch.Tensor, classes: tuple[str, ...]) -> Figure:
    """Counts (rows true, columns predicted); errors shaded red, the diagonal drawn apart in green."""
    counts = confusion.detach().cpu().numpy()
    diagonal = np.eye(len(classes), dtype=bool)
    figure = new_figure(7.2, 6)
    figure.suptitle("Confusion matrix")
    axes = figure.add_subplot()
    errors = axes.imshow(
        np.ma.masked_where(diagonal, counts), cmap="Reds", vmin=0, vmax=max(int(counts[~diagonal].max(initial=0)), 1)
    )
    axes.imshow(np.ma.masked_where(~diagonal, np.ones_like(counts)), cmap="Greens", vmin=0, vmax=1.6)
    peak = counts[~diagonal].max(initial=0)
    for (row, column), count in np.ndenumerate(counts):
        if row == column:
            axes.text(column, row, f"{count}", ha="center", va="center", color="white", fontweight="bold", fontsize=9)
        elif count:
            axes.text(
                column,
                row,
                f"{count}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if count > 0.6 * peak else "black",
            )
    ticks, long_names = np.arange(len(classes)), max(map(len, classes)) > 2
    axes.set_xticks(ticks, classes, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    axes.set_yticks(ticks, classes)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.spines[:].set_visible(False)
    figure.colorbar(errors, ax=axes, shrink=0.8, label="misclassified digits (off-diagonal)")
    return figure


@styled
def reliability_diagram(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> Figure:
    """Accuracy against mean confidence per confidence bin, the gap to the diagonal, and how full each bin is."""
    result = calibration(probabilities, labels, bins)
    rows = result["bins"]
    lower = np.array([row["lower"] for row in rows])
    width = 1.0 / bins
    filled = np.array([row["count"] > 0 for row in rows])
    accuracy = np.array([row["accuracy"] or 0.0 for row in rows])
    confidence = np.array([row["confidence"] or 0.0 for row in rows])
    figure = new_figure(6.5, 7)
    figure.suptitle(f"Reliability diagram — ECE {result['ece']:.2%} ({bins} bins)")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(
        lower[filled],
        accuracy[filled],
        width,
        align="edge",
        color=TRAIN_COLOR,
        edgecolor="white",
        label="accuracy in the bin",
    )
    top.bar(
        lower[filled],
        (confidence - accuracy)[filled],
        width,
        bottom=accuracy[filled],
        align="edge",
        color=WRONG,
        alpha=0.35,
        edgecolor=WRONG,
        hatch="//",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="#444444", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    bottom.bar(lower, [row["count"] for row in rows], width, align="edge", color="#7f7f7f", edgecolor="white")
    bottom.set_yscale("symlog")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("digits")
    return figure


@styled
def confused_pairs(images, labels, probabilities, classes, top: int = 5, examples: int = 8) -> Figure:
    """The `top` most frequent (true, predicted) mistakes, one row each, with up to `examples` digits."""
    predicted = probabilities.argmax(1)
    confusion = count_confusion(predicted.cpu(), labels.cpu(), len(classes))
    pairs = most_confused_pairs(confusion, top)
    if not pairs:
        return note_figure("Most-confused pairs", "every digit is classified correctly")
    confidence = probabilities.max(1).values
    height, width = images.shape[-2:]
    tiles = np.full((len(pairs) * examples, height, width), np.nan)
    titles = [""] * len(tiles)
    colors: list[str | None] = [None] * len(tiles)
    for row, (true, guess, _) in enumerate(pairs):
        index = ((labels == true) & (predicted == guess)).nonzero().squeeze(1)[:examples]
        for column, chosen in enumerate(index.tolist()):
            position = row * examples + column
            tiles[position] = pixels(images[chosen])
            titles[position], colors[position] = f"{confidence[chosen].item():.1%} sure", WRONG
    label_chars = max(len(classes[true]) + len(classes[guess]) + 3 for true, guess, _ in pairs)
    geometry = Mosaic(cell=1.1, gap_x=0.15, gap_y=0.35, top=0.65, left=max(1.0, 0.3 + 0.09 * label_chars))
    figure, axes, _ = tile_figure(
        tiles,
        examples,
        f"The {len(pairs)} most-confused pairs (true → predicted)",
        titles,
        colors,
        2.0,
        geometry,
        title_size=8,
        cmap="gray_r",
        vmin=0,
        vmax=1,
    )
    step_y = height + round(geometry.gap_y / (geometry.cell / height))  # as tile_figure lays the rows out
    for row, (true, guess, count) in enumerate(pairs):
        axes.text(
            -6,
            row * step_y + height / 2 - 0.5,
            f"{classes[true]} → {classes[guess]}\n{count}×",
            ha="right",
            va="center",
            fontsize=11,
            fontweight="bold",
        )
    return figure
