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

from .errors import ImageError

MIN_CONTRAST = 12.0  # gray levels (of 255) of ink against its paper below which a picture is blank
NOISE_SIGMAS = 4.0  # multiples of the paper's noise (robust std) that a stroke must stand out by
PAPER_WINDOW = 0.33  # the paper is estimated over windows of this fraction of the longer side
SMALL_PICTURE = 64  # px: no shading to flatten in a picture this small, and a digit filling it has wide strokes
NEAR = 0.6  # pieces within this fraction of the main piece's size (plus a margin) belong to the digit
LINE_LENGTH = 0.5  # a ruled line spans at least this fraction of the picture's width (or height)
LINE_SLENDERNESS = 20  # ... and is at least this many times longer than it is thick


@dataclass
class Ink:
    """Ink intensity (H, W) float32 in gray levels above the paper, the strokes' mask, and the paper's noise."""

    values: np.ndarray
    mask: np.ndarray
    noise: float


def find_ink(gray: np.ndarray, flatten: bool = True) -> Ink:
    """Ink of a grayscale picture (H, W) float in [0, 255], either polarity; ImageError if it is blank."""
    darkness = towards_ink(gray)
    if flatten and min(gray.shape) > SMALL_PICTURE:
        residual = darkness - _paper(darkness)
        residual -= _median(residual)  # an opening sits below the paper's noise: centre the paper on 0
    else:
        residual = darkness - _border_median(darkness)
    smooth = ndimage.uniform_filter(residual, 3)
    noise = _robust_std(smooth)  # of the smoothed paper: strokes are wider than a pixel, noise is not
    reach = float(smooth.max())
    if reach < max(MIN_CONTRAST, 1.5 * NOISE_SIGMAS * noise):
        raise ImageError("no ink found (blank image)")
    strong = smooth > max(NOISE_SIGMAS * noise, 0.3 * reach)
    weak = smooth > max(0.5 * NOISE_SIGMAS * noise, 0.12 * reach)
    values = np.clip(residual, 0, None)
    labels, count = ndimage.label(weak | strong, np.ones((3, 3)))
    seeded = np.zeros(count + 1, bool)
    seeded[np.unique(labels[strong])] = True
    seeded[0] = False
    return Ink(values.astype(np.float32), seeded[labels], noise)


def strokes(ink: Ink, clean: bool = True) -> np.ndarray:
    """The mask of the pieces that form the digit (see the module docstring); ImageError if none is left."""
    mask = _without_lines(ink.mask) if clean else ink.mask
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    if count == 0:
        raise ImageError("no ink found (blank image)")
    if not clean:
        return mask
    mass = ndimage.sum_labels(ink.values, labels, np.arange(1, count + 1))
    boxes = ndimage.find_objects(labels)
    main = int(np.argmax(mass))
    keep = np.zeros(count + 1, bool)
    for number, box in enumerate(boxes):
        keep[number + 1] = number == main or (mass[number] >= 0.02 * mass[main] and _near(box, boxes[main]))
    return keep[labels]


def all_strokes(ink: Ink, clean: bool = True) -> np.ndarray:
    """The mask of every piece of ink (a whole number's digits), ruled lines dropped when `clean` is on.

    Unlike `strokes`, no piece is chosen: telling the digits apart, and specks from them, is left to
    the caller (digitlab.numbers). ImageError if nothing is left.
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
    background = _border_median(gray)
    smooth = ndimage.uniform_filter(gray, 3)
    dark_ink = background - smooth.min() > smooth.max() - background
    return 255 - gray if dark_ink else gray


def _paper(darkness: np.ndarray) -> np.ndarray:
    """The paper's level under every pixel: a grey opening (removes strokes narrower than the window),
    computed on a reduced copy for speed and smoothed, so shadows and light gradients stay in it."""
    height, width = darkness.shape
    factor = max(1, max(height, width) // 128)
    small = np.asarray(Image.fromarray(darkness).reduce(factor)) if factor > 1 else darkness
    window = max(3, int(PAPER_WINDOW * max(small.shape)) | 1)
    paper = ndimage.grey_opening(small, size=(window, window), mode="nearest")
    paper = ndimage.uniform_filter(paper, window // 2 | 1, mode="nearest")
    if factor > 1:
        paper = np.asarray(Image.fromarray(paper).resize((width, height), Image.Resampling.BILINEAR))
    return np.minimum(paper, darkness.max())


def _border(gray: np.ndarray) -> np.ndarray:
    frame = max(1, min(gray.shape) // 20)
    return np.concatenate([gray[:frame].ravel(), gray[-frame:].ravel(),
                           gray[:, :frame].ravel(), gray[:, -frame:].ravel()])


def _border_median(gray: np.ndarray) -> float:
    return float(np.median(_border(gray)))


def _sample(values: np.ndarray) -> np.ndarray:
    return values.ravel()[:: max(1, values.size // 200_000)]


def _median(values: np.ndarray) -> float:
    return float(np.median(_sample(values)))


def _robust_std(values: np.ndarray) -> float:
    """1.4826 × the median absolute deviation: the noise of the paper, which is most of any picture."""
    sample = _sample(values)
    return 1.4826 * float(np.median(np.abs(sample - np.median(sample))))


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
    pool = max(1, length // 24)
    pooled = mask[:, : width // pool * pool].reshape(height, -1, pool).any(2)
    band = ndimage.binary_opening(pooled, np.ones((1, length // pool)))
    band = np.repeat(band, pool, axis=1)
    band = np.pad(band, ((0, 0), (0, width - band.shape[1])), mode="edge") & mask
    labels, count = ndimage.label(band, np.ones((3, 3)))
    lines = np.zeros_like(mask)
    for number, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        span = cols.stop - cols.start
        piece = labels[rows, cols] == number
        thickness = piece.sum() / span
        touches_side = cols.start <= 0.05 * width or cols.stop >= 0.95 * width
        if span >= length and span >= LINE_SLENDERNESS * thickness and touches_side:
            lines[rows, cols] |= piece
    return lines
