"""Finding the ink on a page: which pixels are the pen's, and which are paper, shadow, ruled lines or dust.

`find_ink` turns a grayscale picture into an ink map (how far each pixel stands out from the
paper behind it, in gray levels) and a mask of the strokes. The paper is estimated locally when
`flatten` is on (a grey-scale opening wider than any pen stroke, then smoothed), so shadows and
uneven light are subtracted rather than mistaken for ink. `strokes` keeps the connected pieces
that form the digit: long, thin, straight lines that run off the page (ruled or squared paper, a
margin) and isolated specks are dropped when `clean` is on, and the largest piece is kept with
the pieces that lie near it (the flag of a 5, a stroke broken by a faint pen). `all_strokes`
keeps every piece (less the lines), for a number of several digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import ImageError

MIN_CONTRAST = 16.0  # ink against its paper (gray levels of 255, relative to the paper's brightness) below which a picture is blank
NOISE_SIGMAS = 4.0  # multiples of the paper's noise (robust std) that a stroke must stand out by
PAPER_WINDOW = 0.33  # the paper is estimated over windows of this fraction of the longer side
SMALL_PICTURE = 64  # px: no shading to flatten in a picture this small, and a digit filling it has wide strokes
NEAR = 0.6  # pieces within this fraction of the main piece's size (plus a margin) belong to the digit
SIDE_MASS, SIDE_HEIGHT, SIDE_OVERLAP = 0.3, 0.5, 0.2  # a second digit beside the first (_beside)
LINE_LENGTH = 0.5  # a ruled line spans at least this fraction of the picture's width (or height)
LINE_SLENDERNESS = 20  # ... and is at least this many times longer than it is thick
SAMPLE = 40_000  # the paper's statistics (median, noise) are read from about this many evenly strided pixels
# Cheap tests that skip work whose answer they already know (a drawing on a clean canvas: no paper to
# flatten, no ruled line); each gives exactly the full computation's answer. Tests turn them off to check.
SHORTCUTS = True


@dataclass
class Ink:
    """Ink intensity (H, W) float32 in gray levels above the paper, the strokes' mask, and the paper's noise."""

    values: np.ndarray
    mask: np.ndarray
    noise: float


def find_ink(gray: np.ndarray, flatten: bool = True) -> Ink:
    """Ink of a grayscale picture (H, W) float in [0, 255], either polarity; ImageError if it is blank."""
    dark_ink = _dark_ink(gray)
    darkness = 255 - gray if dark_ink else gray
    if flatten and min(gray.shape) > SMALL_PICTURE:
        paper = _paper(darkness)
        residual = darkness - paper
        if dark_ink:  # light falls on ink and paper alike: measure ink against its own paper's brightness
            residual *= 255 / np.maximum(255 - paper, 16)
        residual -= _median(residual)  # an opening sits below the paper's noise: centre the paper on 0
    else:
        residual = darkness - _border_median(darkness)
    smooth = ndimage.uniform_filter(residual, 3)
    noise = _robust_std(smooth)  # of the smoothed paper: strokes are wider than a pixel, noise is not
    inner = _inner_frame(smooth.shape)  # a picture's outermost pixels (edge effects, vignetting) seed nothing
    reach = float(smooth[inner].max())
    if reach < max(MIN_CONTRAST, 1.5 * NOISE_SIGMAS * noise):
        raise ImageError("no ink found (blank image)")
    strong = (smooth > max(NOISE_SIGMAS * noise, 0.3 * reach)) & _frame_mask(smooth.shape, inner)
    weak = smooth > max(0.5 * NOISE_SIGMAS * noise, 0.12 * reach)
    # what is left of the paper's pixel noise is shaved off the ink, so noise does not fatten faint strokes
    values = np.clip(residual - 2 * _robust_std(residual), 0, None)
    labels, count = ndimage.label(weak | strong, np.ones((3, 3)))
    seeded = np.zeros(count + 1, bool)
    seeded[np.unique(labels[strong])] = True
    seeded[0] = False
    return Ink(values.astype(np.float32), seeded[labels], noise)


def _inner_frame(shape: tuple[int, int]) -> tuple[slice, slice]:
    """The picture less its outer 2% on every side (at least a pixel once it is 50 px or more)."""
    rows, cols = (max(0, side // 50) for side in shape)
    return slice(rows, shape[0] - rows), slice(cols, shape[1] - cols)


def _frame_mask(shape: tuple[int, int], inner: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[inner] = True
    return mask


def strokes(ink: Ink, clean: bool = True) -> np.ndarray:
    """The mask of the pieces that form the digit (see the module docstring); ImageError if none is left."""
    return digit_strokes(ink, clean)[0]


def digit_strokes(ink: Ink, clean: bool = True) -> tuple[np.ndarray, int]:
    """The mask of the pieces that form the digit (as `strokes`) and how many other digit-sized pieces stand
    beside the digit's largest piece, on its line (`_beside`): 1 or more means the picture is not one digit."""
    mask = _without_lines(ink.mask) if clean else ink.mask
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    if count == 0:
        raise ImageError("no ink found (blank image)")
    pieces = _pieces(ink, labels, count)
    if not clean:
        return mask, _beside(pieces)
    keep = np.zeros(count + 1, bool)
    for number, box in enumerate(pieces.boxes):
        keep[number + 1] = number == pieces.main or (
            pieces.mass[number] >= 0.02 * pieces.mass[pieces.main] and _near(box, pieces.boxes[pieces.main])
        )
    return keep[labels], _beside(pieces)


@dataclass
class _Pieces:
    """The connected pieces of a mask: each one's ink (mass), its box (rows, cols slices), and the heaviest."""

    mass: np.ndarray
    boxes: list
    main: int


def _pieces(ink: Ink, labels: np.ndarray, count: int) -> _Pieces:
    mass = np.bincount(labels.ravel(), weights=ink.values.ravel(), minlength=count + 1)[1:]
    return _Pieces(mass, ndimage.find_objects(labels), int(np.argmax(mass)))


def _beside(pieces: _Pieces) -> int:
    """How many pieces stand beside the largest on its line: at least SIDE_MASS of its ink and SIDE_HEIGHT of
    its height, sharing half the height of the shorter and at most SIDE_OVERLAP of the narrower one's columns.
    Two digits written apart (a number) give 1 or more; the pieces of one digit broken by its pen lie above
    one another or overlap, and a speck is too small."""
    main = pieces.boxes[pieces.main]
    beside = [  # a thin 1 beside a heavier digit falls short of SIDE_MASS: such a pair may still pass as one digit
        number != pieces.main
        and pieces.mass[number] >= SIDE_MASS * pieces.mass[pieces.main]
        and _span(box[0]) >= SIDE_HEIGHT * _span(main[0])
        and _shared(box[0], main[0]) >= 0.5 * min(_span(box[0]), _span(main[0]))
        and _shared(box[1], main[1]) <= SIDE_OVERLAP * min(_span(box[1]), _span(main[1]))
        for number, box in enumerate(pieces.boxes)
    ]
    return int(sum(beside))


def _span(extent: slice) -> int:
    return extent.stop - extent.start


def _shared(first: slice, second: slice) -> int:
    return max(0, min(first.stop, second.stop) - max(first.start, second.start))


def all_strokes(ink: Ink, clean: bool = True) -> np.ndarray:
    """The mask of every piece of ink (a whole number's digits), ruled lines dropped when `clean` is on.

    Unlike `strokes`, no piece is chosen: telling the digits apart, and specks from them, is left to
    the caller (digitlab.inference.numbers). ImageError if nothing is left.
    """
    mask = _without_lines(ink.mask) if clean else ink.mask
    if not mask.any():
        raise ImageError("no ink found (blank image)")
    return mask


def _near(box: tuple[slice, slice], main: tuple[slice, slice]) -> bool:
    """Whether `box` lies within NEAR × the main piece's size of it (both are (rows, cols) slices)."""
    reach = NEAR * max(main[0].stop - main[0].start, main[1].stop - main[1].start) + 2
    gap_rows = max(main[0].start - box[0].stop, box[0].start - main[0].stop, 0)
    gap_cols = max(main[1].start - box[1].stop, box[1].start - main[1].stop, 0)
    return max(gap_rows, gap_cols) <= reach


def towards_ink(gray: np.ndarray) -> np.ndarray:
    """The picture turned so ink is bright: dark ink on light paper is inverted, light on dark kept."""
    return 255 - gray if _dark_ink(gray) else gray


def _dark_ink(gray: np.ndarray) -> bool:
    """Whether the ink is darker than the paper: the smoothed picture reaches further below the border's level."""
    background = _border_median(gray)
    smooth = ndimage.uniform_filter(gray, 3)
    return background - smooth.min() > smooth.max() - background


def _paper(darkness: np.ndarray) -> np.ndarray:
    """The paper's level under every pixel: a grey opening (removes strokes narrower than the window),
    computed on a reduced copy for speed and smoothed, so shadows and light gradients stay in it.
    A 3×3 median first keeps noise and JPEG ringing from dragging the opening's minimum down."""
    height, width = darkness.shape
    factor = max(1, max(height, width) // 128)
    small = np.asarray(Image.fromarray(darkness).reduce(factor)) if factor > 1 else darkness
    window = max(3, int(PAPER_WINDOW * max(small.shape)) | 1)
    if SHORTCUTS and _bare_everywhere(small, window):
        return np.zeros((height, width), np.float32)
    small = ndimage.median_filter(small, 3, mode="nearest")
    paper = ndimage.grey_opening(small, size=(window, window), mode="nearest")
    paper = ndimage.uniform_filter(paper, 3, mode="nearest")
    if factor > 1:
        paper = np.asarray(Image.fromarray(paper).resize((width, height), Image.Resampling.BILINEAR))
    return np.minimum(paper, darkness.max())


def _bare_everywhere(small: np.ndarray, window: int) -> bool:
    """Whether every window² square of `small` (clipped at the edges) holds a pixel whose 3×3 neighbourhood is
    all 0: then the 3×3 median is 0 there, the opening of `_paper` is 0 everywhere, and so is the paper."""
    bare = ndimage.binary_erosion(small == 0, np.ones((3, 3)), border_value=1)
    return bool(ndimage.maximum_filter(bare.view(np.uint8), window, mode="nearest").all())


def _border(gray: np.ndarray) -> np.ndarray:
    frame = max(1, min(gray.shape) // 20)
    return np.concatenate(
        [gray[:frame].ravel(), gray[-frame:].ravel(), gray[:, :frame].ravel(), gray[:, -frame:].ravel()]
    )


def _border_median(gray: np.ndarray) -> float:
    return float(np.median(_border(gray)))


def _sample(values: np.ndarray) -> np.ndarray:
    return values.ravel()[:: max(1, values.size // SAMPLE)]


def _median(values: np.ndarray) -> float:
    return float(_fast_median(_sample(values)))


def _fast_median(values: np.ndarray) -> float:
    """np.median of a 1-D array, found by two comparisons instead of a partial sort when the middle of the
    sorted values is 0 (a drawing on a clean digital canvas: most of it is exactly 0). Exactly np.median's
    answer (both middle elements are 0, so their mean is too); otherwise np.median itself."""
    below = int(np.count_nonzero(values < 0))
    if SHORTCUTS and below <= (values.size - 1) // 2 and below + int(np.count_nonzero(values == 0)) > values.size // 2:
        return 0.0
    return float(np.median(values))


def _robust_std(values: np.ndarray) -> float:
    """The paper's noise: 1.4826 × the median deviation of the values below the median. Only the paper
    reaches below it (ink lies above), so a digit filling much of the picture does not inflate it."""
    sample = _sample(values)
    middle = _fast_median(sample)
    return 1.4826 * _fast_median(middle - sample[sample <= middle])


def _without_lines(mask: np.ndarray) -> np.ndarray:
    """`mask` less the long straight lines running across the picture (ruled or squared paper, margins)."""
    lines = _lines(mask) | _lines(mask.T).T
    return mask & ~lines if lines.any() else mask


def _lines(mask: np.ndarray) -> np.ndarray:
    """Horizontal lines: runs of ink at least LINE_LENGTH × the width long and LINE_SLENDERNESS× thinner,
    reaching a side of the picture. Columns are pooled first, so slightly tilted lines still count."""
    height, width = mask.shape
    length = int(LINE_LENGTH * width)
    if length < 20:
        return np.zeros_like(mask)
    columns = np.arange(width)
    near_side = (columns <= 0.05 * width) | (columns + 1 >= 0.95 * width)  # as `touches_side` below
    if (
        SHORTCUTS and not mask[:, near_side].any()
    ):  # no ink near a side, so no line can reach one (a drawing on a canvas)
        return np.zeros_like(mask)
    pool = max(1, length // 24)
    pooled = mask[:, : width // pool * pool].reshape(height, -1, pool).any(2)
    if SHORTCUTS and not _has_run(
        np.asarray(pooled), length // pool
    ):  # the opening below would be empty: there is no line
        return np.zeros_like(mask)
    band = ndimage.binary_opening(pooled, np.ones((1, length // pool)))
    band = np.repeat(band, pool, axis=1)
    band = np.pad(band, ((0, 0), (0, width - band.shape[1])), mode="edge") & mask
    labels, _count = ndimage.label(band, np.ones((3, 3)))
    lines = np.zeros_like(mask)
    for number, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        span = cols.stop - cols.start
        piece = labels[rows, cols] == number
        thickness = piece.sum() / span
        touches_side = cols.start <= 0.05 * width or cols.stop >= 0.95 * width
        if span >= length and span >= LINE_SLENDERNESS * thickness and touches_side:
            lines[rows, cols] |= piece & ~_crossings(mask, rows, cols)
    return lines


def _has_run(mask: np.ndarray, length: int) -> bool:
    """Whether any row of `mask` holds `length` or more True in a row: the test, much cheaper than the
    opening itself, of whether an opening by a 1×length line leaves anything."""
    counts = np.zeros((mask.shape[0], mask.shape[1] + 1), np.int32)
    np.cumsum(mask, axis=1, out=counts[:, 1:])
    return bool((counts[:, length:] - counts[:, :-length] == length).any())


def _crossings(mask: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Columns (as a row mask) where strokes cross a horizontal line: ink just above or below it stays."""
    above = mask[rows.start - 1, cols] if rows.start > 0 else np.zeros(cols.stop - cols.start, bool)
    below = mask[rows.stop, cols] if rows.stop < mask.shape[0] else np.zeros(cols.stop - cols.start, bool)
    return ndimage.binary_dilation(above | below)[None, :]
