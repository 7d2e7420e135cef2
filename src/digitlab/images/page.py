"""The writing on a photographed page: dark areas that are not ink, and a line written at a slant.

`find_ink` follows the paper over a third of the picture, on a reduced copy: a large dark area (the
phone's shadow across the sheet, a desk along an edge, dark corners under uneven light) then stands
out as "ink", or swallows the writing. `writing_ink` follows the paper under every pixel at the scale
of a few strokes, at the picture's own size, and measures ink as a share of its own paper's light:
shade is paper in poor light, and writing in it is found as in full light. Pieces of shade left at
the picture's edge (where the paper's window reaches past it) are dropped.

`line_tilt` measures the angle of a line of writing as the one across which its ink is thinnest;
`level` turns the picture so the line runs level, and `box_before_turn` maps a box found in the
turned picture back to the picture as it was.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import ImageError
from .ink import (
    MIN_CONTRAST,
    NOISE_SIGMAS,
    SMALL_PICTURE,
    Ink,
    _frame_mask,
    _inner_frame,
    _median,
    _robust_std,
    find_ink,
)

DARK_AREA = 0.02  # a piece of ink touching the picture's edge with more than this share of its pixels is no stroke
EDGE_SPAN = 0.6  # ... nor one that runs along more than this share of its width or height (a shadow's rim)
PAPER_SCALE = 1 / 8  # the paper is followed over windows of this fraction of the longer side (wider than a stroke)
PAPER_DIGITS = 0.45  # ... or of the digits' height, where it is known (about three strokes)
LIT = 0.25  # ink is dark when more than this share of the picture is bright paper, however dark the rest
THICK = 1.5  # ... or more than this many times as thick as the writing
STRONG, WEAK = 0.3, 0.12  # ink seeds stand out by this share of the darkest ink's contrast; ink they reach, by this
LEVEL_WITHIN = 4.0  # degrees: a line tilted less than this is read as it is
LINE, ONE_PIECE = 1.3, 2.0  # ... and ink is a line when this many times as long along its direction as across
SLANT = 1.1  # ... and slanted when looked at level it is this many times as thick as along its direction
SPREAD = 0.01  # the ink's spread across a direction is between these quantiles of its positions (specks aside)
STEEPEST = 45.0  # degrees: ink tilted more than this is a column, not a slanted line, and is left alone
SAMPLE = 2_000  # ink pixels the tilt is measured from


def writing_ink(
    gray: np.ndarray, flatten: bool = True, digit_rows: float | None = None, dark_ink: bool | None = None
) -> tuple[Ink, np.ndarray]:
    """The ink of the writing in `gray` (H, W), measured against the paper right under it, without large
    dark areas that touch the picture's edge; and the gray picture it was found in.

    The paper is followed at PAPER_SCALE (`_paper_under`), so a shadow, a desk or a dark corner is paper in
    poor light, not ink: ink is what is darker than its own paper, as a share of that paper's brightness,
    and by more than the picture's noise in gray levels (where the light is poor, noise is as loud and ink
    as faint as the shade makes them). Where the digits' height `digit_rows` (pixels) is known, the paper
    is followed over PAPER_DIGITS of it instead: a picture cut around the writing may hold a sliver of
    shade narrower than PAPER_SCALE of it. `dark_ink` says whether the ink is darker than the paper
    (default: `dark_on_light`); a crop of the picture should take the whole picture's answer, as shade
    may fill most of the crop. Without `flatten`, or in a picture too small to hold shade, the ink is
    `find_ink`'s.
    """
    window = 0
    if not flatten or min(gray.shape) <= SMALL_PICTURE:
        ink = find_ink(gray, flatten=flatten)
    else:
        window = max(3, int(PAPER_SCALE * max(gray.shape) if digit_rows is None else PAPER_DIGITS * digit_rows) | 1)
        ink = _ink_on_paper(gray, window, dark_on_light(gray) if dark_ink is None else dark_ink)
    dark = _dark_areas(ink.mask, window // 2)
    return (ink if dark is None else Ink(ink.values, ink.mask & ~dark, ink.noise)), gray


def _ink_on_paper(gray: np.ndarray, window: int, dark_ink: bool) -> Ink:
    """`find_ink`'s ink map and mask, with the paper followed closely enough that shade is paper; ImageError if
    nothing stands out from it."""
    darkness = 255 - gray if dark_ink else gray
    paper = _paper_under(darkness, window)
    residual = darkness - paper
    residual -= _median(residual)  # the opening sits below the paper's noise: centre the paper on 0
    plain = ndimage.uniform_filter(residual, 3)  # gray levels above the paper
    loud = _robust_std(plain)
    # dark ink: how much of its paper's light it takes, in gray levels of a paper of 255
    gain = 255 / np.maximum(255 - paper, 16) if dark_ink else np.ones_like(paper)
    relative = plain * gain
    noise = _robust_std(relative)
    inner = _inner_frame(relative.shape)
    audible = plain > NOISE_SIGMAS * loud
    reach = float(np.where(audible, relative, 0)[inner].max())
    if reach < max(MIN_CONTRAST, 1.5 * NOISE_SIGMAS * noise):
        raise ImageError("no ink found (blank image)")
    strong = audible & (relative > max(NOISE_SIGMAS * noise, STRONG * reach)) & _frame_mask(relative.shape, inner)
    weak = (plain > 0.5 * NOISE_SIGMAS * loud) & (relative > max(0.5 * NOISE_SIGMAS * noise, WEAK * reach))
    labels, count = ndimage.label(weak | strong, np.ones((3, 3)))
    seeded = np.zeros(count + 1, bool)
    seeded[np.unique(labels[strong])] = True
    seeded[0] = False
    values = np.clip(residual * gain - 2 * noise, 0, None)
    return Ink(values.astype(np.float32), seeded[labels], noise)


def dark_on_light(gray: np.ndarray) -> bool:
    """Whether the ink is darker than the paper: the smoothed picture reaches further below its median than
    above it (the median, not the border's as `find_ink` takes it: a desk or dark corners fill the border),
    or more than LIT of it is brighter than halfway from its median to its brightest (a shadow over most
    of a sheet makes its median dark; light strokes on a dark canvas are never that much of it)."""
    middle = _median(gray)
    smooth = ndimage.uniform_filter(gray, 3)
    top = float(smooth.max())
    if middle - smooth.min() > top - middle:
        return True
    return bool(np.count_nonzero(smooth > (middle + top) / 2) > LIT * smooth.size)


def _paper_under(darkness: np.ndarray, window: int) -> np.ndarray:
    """The paper's darkness under every pixel (H, W): a grey opening over window × window pixels, wider than
    any stroke, at the picture's own size: a shadow's edge is a step that an opening keeps where it is,
    and a reduced copy would move it by a pixel and leave a line of false ink along it."""
    return ndimage.grey_opening(darkness, size=(window, window), mode="nearest")


def _dark_areas(mask: np.ndarray, band: int = 0) -> np.ndarray | None:
    """The pieces of `mask` that touch the picture's edge and cover more than DARK_AREA of it, run along more
    than EDGE_SPAN of it, are more than THICK times as thick as the pieces inside (`_thickness`) or lie
    within `band` pixels of the edge, or None. The last two are rims of shade where it meets the edge at
    a slant: there the paper's window reaches past the picture, and the paper it finds is too light."""
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    if count == 0:
        return None
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    if not len(edge):
        return None
    sizes, widths = _thickness(mask, labels, count)
    inside = np.ones(count + 1, bool)
    inside[edge] = inside[0] = False
    reference = np.average(widths[inside], weights=sizes[inside]) if sizes[inside].sum() else np.inf
    boxes = ndimage.find_objects(labels)
    spans = np.array([_span(boxes[label - 1], mask.shape) for label in edge])
    rims = np.array([_within(boxes[label - 1], mask.shape, band) for label in edge])
    large = edge[
        (sizes[edge] > DARK_AREA * mask.size) | (spans > EDGE_SPAN) | (widths[edge] > THICK * reference) | rims
    ]
    return np.isin(labels, large) if len(large) else None


def _thickness(mask: np.ndarray, labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each piece's pixels and mean thickness (count + 1,), the background's first: twice its pixels over its
    rim's (a stroke of width w and length L has w × L pixels and a rim of 2 L). The picture's edge is no rim."""
    rim = mask & ~ndimage.binary_erosion(mask, np.ones((3, 3)), border_value=1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float64)
    rims = np.bincount(labels[rim], minlength=count + 1)
    return sizes, 2 * sizes / np.maximum(rims, 1)


def _within(box: tuple[slice, slice], shape: tuple[int, ...], band: int) -> bool:
    """Whether a box lies within `band` pixels of the top, bottom, left or right edge of a picture of `shape`."""
    rows, cols = box
    return min(rows.stop, shape[0] - rows.start, cols.stop, shape[1] - cols.start) <= band


def _span(box: tuple[slice, slice], shape: tuple[int, ...]) -> float:
    """The larger of a box's height and width, as a share of the picture's."""
    return max((box[0].stop - box[0].start) / shape[0], (box[1].stop - box[1].start) / shape[1])


def line_tilt(mask: np.ndarray, pieces: int = 2) -> float:
    """The angle in degrees (positive: the line falls to the right) of a line of writing in `mask`, or 0 when
    the ink is no line or is within LEVEL_WITHIN of level or steeper than STEEPEST.

    A line of writing is thinnest across when looked at along its own direction: the angle is the one
    that makes the ink's spread across it (`_spreads`, between its SPREAD and 1 - SPREAD quantiles) least,
    searched a little beyond ±STEEPEST. The ink is a line when it is LINE times as long
    along that angle as across (ONE_PIECE times when it is one piece, `pieces` being how many pieces of
    writing it holds: two touching digits have no line to speak of), and it is slanted when it is
    thinner there than when looked at level by SLANT (digits' shapes move a level line's thinnest angle
    a few degrees).
    """
    rows, cols = np.nonzero(mask)
    if len(rows) < 10:
        return 0.0
    step = max(1, len(rows) // SAMPLE)
    x, y = cols[::step] - cols.mean(), rows[::step] - rows.mean()
    coarse = np.arange(-STEEPEST - 6, STEEPEST + 6.5, 3.0)  # every 3 degrees, then every degree near the least
    across = _spreads(coarse, x, y)
    least = float(coarse[np.argmin(across)])
    angles = np.arange(least - 2, least + 2.5, 1.0)
    spreads = _spreads(angles, x, y)
    best = int(np.argmin(spreads))
    angle = float(angles[best])
    along = _spreads(np.array([angle + 90.0]), x, y)[0]
    line = LINE if pieces > 1 else ONE_PIECE
    if along < line * spreads[best] or across[len(coarse) // 2] < SLANT * spreads[best]:
        return 0.0
    if 0 < best < len(angles) - 1:  # the least of a parabola through the least and its neighbours
        before, middle, after = spreads[best - 1 : best + 2]
        curvature = before - 2 * middle + after
        angle += 0.5 * (before - after) / curvature if curvature > 0 else 0.0
    return angle if LEVEL_WITHIN < abs(angle) <= STEEPEST else 0.0


def _spreads(angles: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The spread of points (x, y) across each direction in `angles` (degrees from the x axis, y down): the
    distance between the SPREAD and 1 - SPREAD quantiles of their positions across it (A,)."""
    theta = np.radians(angles)
    across = np.outer(np.cos(theta), y) - np.outer(np.sin(theta), x)  # (A, N)
    low, high = np.quantile(across, [SPREAD, 1 - SPREAD], axis=1)
    return high - low


def level(gray: np.ndarray, angle: float) -> np.ndarray:
    """`gray` turned by `angle` degrees so a line falling to the right at that angle runs level; the corners
    the turn uncovers are filled with the picture's median (the paper)."""
    paper = float(np.median(gray[:: max(1, gray.shape[0] // 64), :: max(1, gray.shape[1] // 64)]))
    turned = Image.fromarray(gray.astype(np.float32)).rotate(
        angle, Image.Resampling.BILINEAR, expand=True, fillcolor=paper
    )
    return np.asarray(turned, np.float32)


def box_before_turn(
    box: tuple[float, ...], angle: float, turned: tuple[int, int], original: tuple[int, int]
) -> tuple[float, ...]:
    """A box (x0, y0, x1, y1) found in a picture `level` turned by `angle` (shape `turned`, (H, W)), as the
    smallest box holding its corners in the picture before the turn (shape `original`)."""
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    turned_y, turned_x = turned[0] / 2, turned[1] / 2
    y_mid, x_mid = original[0] / 2, original[1] / 2
    x0, y0, x1, y1 = box
    xs, ys = [], []
    for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
        u, v = x - turned_x, y - turned_y
        xs.append(x_mid + u * cos - v * sin)
        ys.append(y_mid + u * sin + v * cos)
    return min(xs), min(ys), max(xs), max(ys)
