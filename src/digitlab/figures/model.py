"""Figures of a model's insides, dispatched on the model's class.

`first_layer(model)` draws what the first layer looks for; `activations(model, images, labels,
classes)` draws what the model computes inside for a few digits. Both are `functools.singledispatch`
functions: a model type adds its own pictures with `@first_layer.register(ItsClass)` without
touching the others. The generic versions handle any model whose first weighted layer is an
`nn.Conv2d` (filters, and the feature maps of one digit) and return None for anything else, which
the report shows as a note.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..data.datasets import to_float
from ..models.nets import MLP
from .style import DPI, InlineFigure, Mosaic, frame, pixels, styled, tile_figure

MAX_UNITS = 64  # first-layer units drawn at most; wider layers show the first MAX_UNITS
GRID = Mosaic(cell=1.0, gap_x=0.12, gap_y=0.3, top=0.7, right=1.2)  # inches; the right margin holds the colorbar


def first_weighted_layer(model: nn.Module) -> nn.Module | None:
    """The first Linear or Conv2d among the model's modules, in registration order (the usual forward order)."""
    return next((module for module in model.modules() if isinstance(module, (nn.Linear, nn.Conv2d))), None)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@styled
def weight_images(weights: torch.Tensor, title: str, label: str = "weight") -> Figure:
    """Kernels (K, H, W) as images on a diverging map centred at zero (red positive, blue negative), 8 per row."""
    weights = weights.detach().cpu().float()
    limit = max(weights.abs().max().item(), 1e-12)
    figure, _, image = tile_figure(
        weights.numpy(),
        min(8, weights.shape[0]),
        title,
        [str(unit) for unit in range(weights.shape[0])],
        geometry=GRID,
        title_size=8,
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
    )
    side_colorbar(figure, image, label)
    return figure


def side_colorbar(figure: Figure, mappable, label: str) -> None:
    """A vertical colorbar in the figure's right margin (GRID leaves 1.2 inches for it)."""
    width = figure.get_size_inches()[0]
    figure.colorbar(mappable, cax=figure.add_axes((1 - 0.95 / width, 0.12, 0.18 / width, 0.7)), label=label)


@functools.singledispatch
def first_layer(model: nn.Module) -> Figure | None:
    """What the first layer responds to; generic version: the filters of a first Conv2d layer, else None."""
    layer = first_weighted_layer(model)
    if not isinstance(layer, nn.Conv2d):
        return None
    kernels = layer.weight[:MAX_UNITS].mean(1)  # (out, in, kh, kw) -> (out, kh, kw): average over input channels
    shown = f"the first {MAX_UNITS} of " if layer.out_channels > MAX_UNITS else ""
    return weight_images(
        kernels,
        f"First-layer filters: {shown}{layer.out_channels} {layer.kernel_size[0]}×{layer.kernel_size[1]} kernels",
    )


@first_layer.register(MLP)
def _mlp_first_layer(model: MLP) -> Figure | None:
    layer = model.linear_layers()[0]
    side = math.isqrt(layer.in_features)
    if side * side != layer.in_features:
        return None
    units = layer.out_features
    shown = f"the first {MAX_UNITS} of " if units > MAX_UNITS else "all "
    return weight_images(
        layer.weight[:MAX_UNITS].reshape(-1, side, side),
        f"First-layer weights: {shown}{units} hidden units as {side}×{side} images",
    )


@functools.singledispatch
def activations(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]
) -> Figure | None:
    """What the model computes inside for `images`; generic version: first-conv feature maps of images[0], else None."""
    layer = first_weighted_layer(model)
    if not isinstance(layer, nn.Conv2d):
        return None
    captured = []
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(output.detach().cpu()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(to_float(images[:1].to(_device(model))))
    finally:
        hook.remove()
        model.train(was_training)
    return feature_maps(images[0], captured[0][0, :MAX_UNITS], f"{classes[int(labels[0])]}")


@styled
def feature_maps(image: torch.Tensor, maps: torch.Tensor, label: str) -> Figure:
    """One input digit and the first layer's output channels (C, H, W) for it."""
    limit = max(maps.abs().max().item(), 1e-12)
    geometry = dataclasses.replace(GRID, left=1.6)
    figure, _, shown = tile_figure(
        maps.numpy(),
        min(8, maps.shape[0]),
        f"First-layer feature maps of one test digit ({label})",
        [str(channel) for channel in range(maps.shape[0])],
        geometry=geometry,
        title_size=8,
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
    )
    width, height = figure.get_size_inches()
    digit = figure.add_axes(
        (0.2 / width, 1 - (geometry.top + geometry.cell) / height, geometry.cell / width, geometry.cell / height)
    )
    digit.imshow(pixels(image), cmap="gray_r", vmin=0, vmax=1)
    digit.set_title("input", fontsize=8)
    frame(digit, "#bbbbbb", 0.8)
    side_colorbar(figure, shown, "activation (before the nonlinearity)")
    return figure


@torch.no_grad()
def mlp_hidden_activations(model: MLP, images: torch.Tensor) -> list[torch.Tensor]:
    """The output of every hidden ReLU, (N, width) each, for uint8 images, in eval mode."""
    was_training = model.training
    model.eval()
    outputs, values = [], to_float(images.to(_device(model))).flatten(1)
    for module in model.net:
        values = module(values)
        if isinstance(module, nn.ReLU):
            outputs.append(values.cpu())
    model.train(was_training)
    return outputs


@activations.register(MLP)
@styled
def _mlp_activations(model: MLP, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]) -> Figure:
    layers = mlp_hidden_activations(model, images)
    widths = [layer.shape[1] for layer in layers]
    columns_in = [0.75] + [0.2 * max(width, 8) for width in widths]  # inches per column
    gap, row_in, row_gap, top, bottom, side = 0.25, 0.6, 0.12, 0.75, 1.3, 0.5
    width_in = 2 * side + sum(columns_in) + gap * len(layers)
    height_in = top + bottom + len(images) * row_in + (len(images) - 1) * row_gap
    figure = InlineFigure(figsize=(width_in, height_in), dpi=DPI)
    figure.suptitle("Hidden-layer activations (after ReLU) for a few test digits", y=1 - 0.12 / height_in, va="top")
    grid = figure.add_gridspec(
        len(images),
        len(columns_in),
        width_ratios=columns_in,
        left=side / width_in,
        right=1 - side / width_in,
        top=1 - top / height_in,
        bottom=bottom / height_in,
        wspace=gap / (sum(columns_in) / len(columns_in)),
        hspace=row_gap / row_in,
    ).subplots(squeeze=False)
    for number, (values, width) in enumerate(zip(layers, widths, strict=True)):
        limit = max(values.max().item(), 1e-12)
        for row, axes in enumerate(grid[:, number + 1]):
            shown = axes.imshow(values[row : row + 1].numpy(), cmap="magma", vmin=0, vmax=limit, aspect="auto")
            frame(axes, "#cccccc", 0.8)
        grid[0, number + 1].set_title(f"hidden layer {number + 1}: {width} units")
        grid[-1, number + 1].set_xticks(np.arange(0, width, max(width // 8, 1)))
        grid[-1, number + 1].set_xlabel("unit")
        box = grid[-1, number + 1].get_position()
        colorbar_axes = figure.add_axes((box.x0 + 0.1 * box.width, 0.45 / height_in, 0.8 * box.width, 0.12 / height_in))
        figure.colorbar(shown, cax=colorbar_axes, orientation="horizontal", label="activation")
    for row, axes in enumerate(grid[:, 0]):
        axes.imshow(pixels(images[row]), cmap="gray_r", vmin=0, vmax=1)
        frame(axes, None)
        axes.set_ylabel(classes[int(labels[row])], rotation=0, ha="right", va="center", fontsize=11)
    return figure
