"""The house style and drawing primitives every figure module shares.

Figures are built with `matplotlib.figure.Figure` (as `InlineFigure`, which a Jupyter cell shows as
a picture), never pyplot, so no backend or global figure state is involved. `styled` applies the
house style to one figure function; `tile_figure` lays many small images out on one axes; `pixels`
turns an image tensor into an array to draw. The figure modules (viz, modelviz, tuneviz) import
from here and never from each other's internals.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

DPI = 100
RIGHT, WRONG = "#2e9e44", "#d62728"  # frame colours of correct and wrong predictions
TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#ff7f0e"
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "image.interpolation": "nearest",
    "figure.facecolor": "white",
    "axes.facecolor": "white",
}


class InlineFigure(Figure):
    """A Figure that Jupyter shows as a picture when a cell returns it, without pyplot or `%matplotlib`:
    IPython asks `_repr_png_` (with pyplot's inline backend active, its own formatter does the same)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def styled(draw):
    """Run a figure function under the house style (fonts, spines, colours) without touching global rcParams."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float) -> Figure:
    return InlineFigure(figsize=(width, height), dpi=DPI, layout="constrained")


@dataclass(frozen=True)
class Mosaic:
    """Geometry of a tile figure, in inches: square tiles of `cell`, the gaps between them, the margins."""

    cell: float = 1.2
    gap_x: float = 0.3
    gap_y: float = 0.45  # room for each tile's title
    top: float = 0.8
    left: float = 0.15
    right: float = 0.15
    bottom: float = 0.15


def tile_figure(
    tiles: np.ndarray,
    columns: int,
    title: str,
    titles: list[str] | None = None,
    colors: list[str | None] | None = None,
    frame_width: float = 3.0,
    geometry: Mosaic = Mosaic(),
    title_size: float = 9,
    **imshow,
):
    """Tiles (K, H, W) in a grid on ONE axes, each with an optional title above and a coloured frame.

    NaN tiles stay empty. Returns (figure, axes, image). One image with text and rectangles on it
    draws many times faster than an axes per tile, which costs tens of milliseconds each.
    """
    count, height, width = tiles.shape
    rows = math.ceil(count / columns)
    scale = geometry.cell / height  # inches per pixel
    step_x, step_y = width + round(geometry.gap_x / scale), height + round(geometry.gap_y / scale)
    canvas = np.full((rows * step_y - (step_y - height), columns * step_x - (step_x - width)), np.nan)
    for position in range(count):
        row, column = divmod(position, columns)
        canvas[row * step_y : row * step_y + height, column * step_x : column * step_x + width] = tiles[position]
    size = (
        geometry.left + canvas.shape[1] * scale + geometry.right,
        geometry.top + canvas.shape[0] * scale + geometry.bottom,
    )
    figure = InlineFigure(figsize=size, dpi=DPI)
    figure.suptitle(title, y=1 - 0.12 / size[1], va="top")
    axes = figure.add_axes(
        (
            geometry.left / size[0],
            geometry.bottom / size[1],
            canvas.shape[1] * scale / size[0],
            canvas.shape[0] * scale / size[1],
        )
    )
    image = axes.imshow(np.ma.masked_invalid(canvas), **imshow)
    axes.axis("off")
    for position in range(count):
        row, column = divmod(position, columns)
        x, y = column * step_x - 0.5, row * step_y - 0.5
        if titles and titles[position]:
            axes.text(x + width / 2, y - 1, titles[position], ha="center", va="bottom", fontsize=title_size)
        if colors and colors[position]:
            axes.add_patch(
                Rectangle(
                    (x, y), width, height, fill=False, edgecolor=colors[position], linewidth=frame_width, clip_on=False
                )
            )
    return figure, axes, image


def pixels(image: torch.Tensor) -> np.ndarray:
    """One image (1, H, W) or (H, W), uint8 or float, as a float (H, W) array in [0, 1]."""
    image = image.detach().cpu().reshape(image.shape[-2:])
    return (image.float() / 255 if image.dtype == torch.uint8 else image.float()).numpy()


def frame(axes, color: str | None, width: float = 3.0) -> None:
    """Hide ticks; draw a coloured frame around the axes, or none when color is None."""
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_color(color)
            spine.set_linewidth(width)


@styled
def note_figure(title: str, message: str) -> Figure:
    """A small figure that says why there is nothing to draw (e.g. no confidently wrong digits)."""
    figure = new_figure(7.5, 1.6)
    figure.suptitle(title)
    axes = figure.add_subplot()
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#555555", transform=axes.transAxes)
    return figure


@styled
def digit_grid(
    images: torch.Tensor, titles: list[str], title: str, colors: list[str | None] | None = None, columns: int = 5
) -> Figure:
    """Images in a grid, each with its title and optional frame colour, under a figure title."""
    count = len(titles)
    if count == 0:
        return note_figure(title, "nothing to show")
    tiles = np.stack([pixels(image) for image in images[:count]])
    lines = max(title.count("\n") + 1 for title in titles)  # each line of the tile titles needs 0.15 inch
    geometry = Mosaic(gap_y=0.15 + 0.15 * lines, top=0.5 + 0.15 * lines)
    figure, _, _ = tile_figure(
        tiles,
        min(columns, count),
        title,
        titles,
        colors or ["#bbbbbb"] * count,
        3.0 if colors else 0.8,
        geometry,
        cmap="gray_r",
        vmin=0,
        vmax=1,
    )
    return figure
