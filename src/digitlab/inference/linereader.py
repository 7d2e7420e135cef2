"""A whole line of digits read at once by a line reader (digitlab.models.linereader), without cutting it first.

`line_image` turns the ink of a line of writing into the reader's input: the ink (with its soft edges)
cropped to the line, scaled so its core is white and its rows span INK_ROWS px of a LINE_HEIGHT px
picture. `read_line` runs the reader and decodes its frames the CTC way (the most likely class per
frame, repeats merged, blanks dropped), keeping for each digit the frames it was read in, so the
caller knows where along the line each digit lies. `benchmarks/ship_line_reader.py` trains the
reader shipped inside the package (LINE_READER_FILE) on lines made exactly this way from numbers
composed of MNIST's training digits (digitlab.training.linereader).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..images.ink import Ink
from ..images.preprocess import _digit_crop, _stroke_level
from ..models.linereader import BLANK, LINE_HEIGHT, STRIDE

LINE_READER_FILE = Path(__file__).parents[1] / "weights" / "digitlab-line-reader.safetensors"
INK_ROWS = 24  # px: the line's ink, top to bottom, in its picture
MARGIN = 8  # px of black left and right of the ink, so the first and last digit have frames of their own
# × the digits' height: how far right of its frames' centre a digit's centre lies. Each reader places its digits
# its own way, so a reader file stores its own (metadata `reading`, measured by training.linereader.measure_read_shift
# on validation numbers); this is the first shipped reader's, for files without it.
READ_SHIFT = 0.48


@dataclass
class Line:
    """A line picture (LINE_HEIGHT, W) float32 in [0, 1] and where it lies: working x = left + line x / factor."""

    picture: np.ndarray
    left: float
    factor: float


@dataclass
class LineDigit:
    """One digit the reader found: its class, the probability of its most confident frame, and the line's
    columns its frames cover, in working pixels (x0, x1)."""

    index: int
    confidence: float
    columns: tuple[float, float]
    probabilities: np.ndarray  # (10,): the digits' probabilities over its frames, summed and normalised


def line_image(ink: Ink, keep: np.ndarray) -> Line:
    """The reader's input for the pieces of ink `keep` marks (H, W) bool: see the module docstring."""
    crop, (left, _, _, _) = _digit_crop(ink, keep)
    crop = np.clip(crop / _stroke_level(crop), 0, 1)
    factor = INK_ROWS / crop.shape[0]
    size = (max(1, round(crop.shape[1] * factor)), INK_ROWS)
    resample = Image.Resampling.BOX if factor < 1 else Image.Resampling.BILINEAR
    resized = np.clip(np.asarray(Image.fromarray(crop).resize(size, resample)), 0, 1)
    width = -(-(size[0] + 2 * MARGIN) // STRIDE) * STRIDE  # whole frames
    picture = np.zeros((LINE_HEIGHT, width), np.float32)
    top = (LINE_HEIGHT - INK_ROWS) // 2
    picture[top : top + INK_ROWS, MARGIN : MARGIN + size[0]] = resized
    return Line(picture, left - MARGIN / factor, factor)


def read_shift(reader: nn.Module) -> float:
    """How far right of its frames' centre `reader` reads a digit's centre, × the digits' height: the value its
    file stores (load_model gives it as `reader.reading`), or READ_SHIFT for a file without one."""
    reading = getattr(reader, "reading", None) or {}
    return float(reading.get("read_shift", READ_SHIFT))


@torch.no_grad()
def read_line(reader: nn.Module, line: Line) -> list[LineDigit]:
    """The digits the reader reads along `line`, left to right (greedy CTC decoding)."""
    reader.eval()
    parameter = next(reader.parameters())
    picture = torch.from_numpy(line.picture)[None, None].to(parameter.device, parameter.dtype)
    probabilities = reader(picture)[0].float().softmax(0).numpy()  # (11, frames)
    found = []
    for index, confidence, first, stop in decode(probabilities):
        digits = probabilities[:BLANK, first // STRIDE : stop // STRIDE].sum(1)
        columns = (line.left + first / line.factor, line.left + stop / line.factor)
        found.append(LineDigit(index, confidence, columns, digits / digits.sum()))
    return found


def decode(probabilities: np.ndarray) -> list[tuple[int, float, int, int]]:
    """Greedy CTC decoding of per-frame probabilities (11, frames): for each digit, its class, its most
    confident frame's probability, and the line's columns [first, stop) its frames cover."""
    best = probabilities.argmax(0)
    digits = []
    frame = 0
    while frame < len(best):
        end = frame + 1
        while end < len(best) and best[end] == best[frame]:
            end += 1
        if best[frame] != BLANK:
            confidence = float(probabilities[best[frame], frame:end].max())
            digits.append((int(best[frame]), confidence, frame * STRIDE, end * STRIDE))
        frame = end
    return digits
