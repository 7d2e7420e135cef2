"""Figures of why a model decides: saliency maps of test digits, and the digits each first-layer filter likes.

`saliency_grid` draws test digits the model gets right and wrong above their integrated-gradients
maps for the class it chose (digitlab.explain); `filter_digits` shows, for a convolutional model,
the training digits on which each first-layer filter responds most strongly.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..data.datasets import to_float
from ..inference.explain import attribution_maps
from .model import first_weighted_layer
from .style import DPI, RIGHT, WRONG, Mosaic, frame, note_figure, pixels, styled, tile_figure

PER_GROUP = 8  # digits drawn right and wrong
FILTERS_SHOWN, DIGITS_PER_FILTER, SEARCHED = 24, 6, 10_000


def saliency_picks(labels: torch.Tensor, probabilities: torch.Tensor, count: int = PER_GROUP):
    """(right, wrong) test indices: the first `count` digits read right, and the `count` most confidently wrong."""
    predicted = probabilities.argmax(1)
    right = (predicted == labels).nonzero().squeeze(1)[:count]
    wrong = (predicted != labels).nonzero().squeeze(1)
    wrong = wrong[probabilities[wrong].max(1).values.argsort(descending=True)][:count]
    return right, wrong


@styled
def saliency_grid(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor, classes
) -> Figure:
    """Test digits read right (top) and wrong (bottom), each above its integrated-gradients map for the class
    the model chose: red pixels pushed towards that class, blue ones away from it."""
    right, wrong = saliency_picks(labels, probabilities)
    groups = [(name, chosen) for name, chosen in (("right", right), ("wrong", wrong)) if len(chosen)]
    predicted = probabilities.argmax(1)
    columns = max(len(chosen) for _, chosen in groups)
    cell = 0.95
    figure = Figure(figsize=(0.4 + columns * (cell + 0.12), 0.7 + len(groups) * 2 * (cell + 0.35)), dpi=DPI)
    figure.suptitle("Saliency (integrated gradients) of the answer: digits read right, then wrong")
    grid = figure.add_gridspec(2 * len(groups), columns, left=0.03, right=0.97, top=0.86, bottom=0.03, hspace=0.45)
    for number, (name, chosen) in enumerate(groups):
        maps = attribution_maps(model, images[chosen], predicted[chosen])
        for column, (index, values) in enumerate(zip(chosen.tolist(), maps, strict=True)):
            digit = figure.add_subplot(grid[2 * number, column])
            digit.imshow(pixels(images[index]), cmap="gray_r", vmin=0, vmax=1)
            frame(digit, RIGHT if name == "right" else WRONG, 2.0)
            said, confidence = classes[int(predicted[index])], float(probabilities[index].max())
            digit.set_title(f"{classes[int(labels[index])]} → {said} ({confidence:.0%})", fontsize=8)
            limit = max(float(values.abs().flatten().quantile(0.98)), 1e-12)
            saliency = figure.add_subplot(grid[2 * number + 1, column])
            saliency.imshow(values.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            frame(saliency, "#cccccc", 0.8)
            saliency.set_title(f"why {said}", fontsize=8)
    return figure


@torch.no_grad()
def strongest_digits(layer: nn.Conv2d, images: torch.Tensor, count: int = DIGITS_PER_FILTER) -> torch.Tensor:
    """(filters, count) indices into `images` (uint8 (N, 1, 28, 28)) of the digits on which each filter of `layer`
    reaches its highest response anywhere in the picture, highest first."""
    device = layer.weight.device
    peaks = torch.cat(
        [
            layer(to_float(images[start : start + 1000].to(device))).amax((2, 3)).cpu()
            for start in range(0, len(images), 1000)
        ]
    )  # (N, filters)
    return peaks.topk(count, dim=0).indices.T


@styled
def filter_digits(model: nn.Module, images: torch.Tensor) -> Figure | None:
    """For a model whose first weighted layer is a Conv2d: the training digits (among the first SEARCHED of
    `images`) that excite each first-layer filter most; None for any other model."""
    layer = first_weighted_layer(model)
    if not isinstance(layer, nn.Conv2d) or layer.in_channels != images.shape[1]:
        return None
    if len(images) == 0:
        return note_figure("Digits that excite each first-layer filter", "no training digits to search")
    shown = min(layer.out_channels, FILTERS_SHOWN)
    count = min(DIGITS_PER_FILTER, len(images))
    indices = strongest_digits(layer, images[:SEARCHED], count)[:shown]
    per_row = 2 if shown > 8 else 1  # two filters side by side keeps the figure within a page's height
    blank = np.full((28, 28), np.nan)  # a gap between the two filters of a row
    tiles, titles = [], []
    for unit in range(shown):
        if unit % per_row:
            tiles.append(blank)
            titles.append("")
        tiles += [pixels(images[index]) for index in indices[unit].tolist()]
        titles += [f"filter {unit}"] + [""] * (count - 1)
    first = f"the first {shown} of " if layer.out_channels > shown else ""
    figure, _, _ = tile_figure(
        np.stack(tiles),
        per_row * count + per_row - 1,
        f"Training digits that excite each first-layer filter most\n({first}{layer.out_channels} filters; "
        f"{min(len(images), SEARCHED):,} digits searched)",
        titles,
        geometry=Mosaic(cell=0.55, gap_x=0.08, gap_y=0.3, top=0.95),
        title_size=8,
        cmap="gray_r",
        vmin=0,
        vmax=1,
    )
    return figure
