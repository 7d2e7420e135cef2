"""The writing on a photographed page: dark areas that are not ink, and a line written at a slant.

`find_ink` measures ink against the paper. A large dark area (the phone's shadow across the sheet, a
desk along an edge, dark corners under uneven light) then stands out as one huge piece of "ink" that
touches the picture's edge, which `segment` would read as digits. `writing_ink` drops such pieces,
and also reads the picture again with the paper followed at the scale of a stroke (a grey closing a
little wider than a pen, taken as the local paper and divided out), which leaves strokes and
flattens everything wider: the writing may lie inside the dark area, or have fallen below the
thresholds it set. It keeps whichever of the two looks more like writing.

`line_tilt` measures the angle of a line of writing from the second moments of its ink (a row of
digits is much longer than it is tall); `level` turns the picture so the line runs level, and
`box_before_turn` maps a box found in the turned picture back to the picture as it was.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from .ink import Ink, find_ink

DARK_AREA = 0.02  # a piece of ink touching the picture's edge with more than this share of its pixels is no stroke
EDGE_SPAN = 0.6  # ... nor one that runs along more than this share of its width or height (a shadow's rim)
WRITING_DUST = 0.01  # pieces below this share of the largest are dust, not pieces of writing
STROKE_SCALE = 1 / 24  # ... then the paper is followed over windows of this fraction of the longer side
LEVEL_WITHIN = 4.0  # degrees: a line tilted less than this is read as it is
ELONGATED = 2.5  # ... and a line is one when its ink is this many times longer along its axis than across it
STEEPEST = 45.0  # degrees: ink tilted more than this is a column, not a slanted line, and is left alone
SAMPLE = 20_000  # ink pixels the tilt is measured from


def writing_ink(gray: np.ndarray, flatten: bool = True) -> tuple[Ink, np.ndarray]:
    """The ink of the writing in `gray` (H, W), without large dark areas that touch the picture's edge, and
    the gray picture it was found in: the picture itself, or the picture with the paper followed at a
    stroke's scale, whichever leaves ink that looks more like writing (`_writing_like`)."""
    ink = find_ink(gray, flatten=flatten)
    dark = _dark_areas(ink.mask)
    if dark is None:
        return ink, gray
    candidates = [(Ink(ink.values, ink.mask & ~dark, ink.noise), gray)]
    # a dark area around a page means dark writing on it, whatever the picture's border suggests
    evened = _paper_divided_out(gray)
    other = find_ink(evened, flatten=flatten)
    dark = _dark_areas(other.mask)
    candidates.append((other if dark is None else Ink(other.values, other.mask & ~dark, other.noise), evened))
    return max(candidates, key=lambda candidate: _writing_like(candidate[0].mask))


def _writing_like(mask: np.ndarray) -> float:
    """Large pieces, and few of them: the largest piece's pixels over the number of pieces that are not dust
    (a dark area's speckled texture makes hundreds; a vignette that swallowed the writing leaves crumbs)."""
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    if count == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes.max()) / (1 + int((sizes >= WRITING_DUST * sizes.max()).sum()))


def _dark_areas(mask: np.ndarray) -> np.ndarray | None:
    """The pieces of `mask` that touch the picture's edge and cover more than DARK_AREA of it or run along more
    than EDGE_SPAN of it, or None."""
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    if count == 0:
        return None
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    if not len(edge):
        return None
    sizes = ndimage.sum_labels(mask, labels, edge)
    boxes = ndimage.find_objects(labels)
    spans = np.array([_span(boxes[label - 1], mask.shape) for label in edge])
    large = edge[(sizes > DARK_AREA * mask.size) | (spans > EDGE_SPAN)]
    return np.isin(labels, large) if len(large) else None


def _span(box: tuple[slice, slice], shape: tuple[int, ...]) -> float:
    """The larger of a box's height and width, as a share of the picture's."""
    return max((box[0].stop - box[0].start) / shape[0], (box[1].stop - box[1].start) / shape[1])


def _paper_divided_out(gray: np.ndarray) -> np.ndarray:
    """Dark ink on paper (H, W): the paper under every pixel estimated by a grey closing wider than a stroke
    (computed on a reduced copy), and the picture divided by it, so shade wider than the window turns white."""
    height, width = gray.shape
    factor = max(1, max(height, width) // 256)
    small = np.asarray(Image.fromarray(gray.astype(np.float32)).reduce(factor)) if factor > 1 else gray
    window = max(3, int(STROKE_SCALE * max(small.shape)) | 1)
    paper = ndimage.grey_closing(ndimage.median_filter(small, 3, mode="nearest"), size=(window, window), mode="nearest")
    paper = ndimage.uniform_filter(paper, window, mode="nearest")
    paper = np.asarray(Image.fromarray(paper.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(235.0 * gray / np.maximum(paper, 8.0), 0, 255).astype(np.float32)


def line_tilt(mask: np.ndarray) -> float:
    """The angle in degrees (positive: the line falls to the right) of a line of writing in `mask`, or 0 when
    the ink is not a line (not ELONGATED) or is steeper than STEEPEST or within LEVEL_WITHIN of level."""
    rows, cols = np.nonzero(mask)
    if len(rows) < 10:
        return 0.0
    step = max(1, len(rows) // SAMPLE)
    points = np.stack([cols[::step], rows[::step]]).astype(np.float64)
    values, vectors = np.linalg.eigh(np.cov(points))
    if values[0] <= 0 or math.sqrt(values[1] / values[0]) < ELONGATED:
        return 0.0
    dx, dy = vectors[:, 1]
    angle = math.degrees(math.atan2(dy, dx))
    angle = (angle + 90) % 180 - 90  # the axis has no direction: fold into [-90, 90)
    return angle if LEVEL_WITHIN < abs(angle) <= STEEPEST else 0.0


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
