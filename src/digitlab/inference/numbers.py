"""Reading a written number ("2026", a phone number, an amount): its digits found, ordered and classified.

A picture's ink is found as for a single digit (ink.find_ink), but every piece is kept
(ink.all_strokes). `segment` turns the pieces into digits: dust is dropped, pieces stacked in the
same columns (the flag of a 5, a 7's bar, a stroke broken by a faint pen) are merged, pieces
that are small against the number's digits are dropped as specks, and a blob much wider than a
digit of its height (neighbours that touch) is cut into parts along paths of least ink near
where the cuts are expected. Each digit's mask then goes through preprocess.digit_field and
finish, so it reaches the model exactly as a single digit would. `compose_number` lays MNIST
digits side by side on paper: the tests and benchmarks/numbers.py read such numbers.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..config import PreprocessOptions
from ..errors import ConfigError, ImageError
from ..images.ink import all_strokes
from ..images.page import box_before_turn, level, line_tilt, writing_ink
from ..images.preprocess import Preprocessed, digit_field, finish, load_image, working_gray
from .evaluate import predict_logits
from .predict import _inputs
from .realworld import _coverage, _noise, _place, stroke_mask

DIGITS = 10
MAX_DIGITS = 32  # a longer "number" is refused: it is a page of text, or noise read as digits
DUST = 0.01  # pieces with less than this fraction of the largest piece's pixels are dropped before merging
OVERLAP = 0.5  # pieces whose columns overlap by this fraction of the narrower one's width are one digit
SPECK_AREA, SPECK_HEIGHT = 0.08, 0.35  # a group below both fractions of the largest's area and height is a speck
WIDE = 0.6  # a blob wider than this × the digits' height may hold several touching digits (a 1 beside a 3)
ASPECT = 0.7  # width / height of a typical digit's ink (MNIST validation digits, the 1s included)
SPLIT = 1.45  # without a model, a blob wider than this many typical digits is cut into that many
CUT_WINDOW = 0.35  # ... each cut within this fraction of a part's width of where it is expected
MINIMUM_REACH = 0.04  # with a model, candidate cuts are minima of the ink per column over ± this × height
GRID = 0.1  # ... and every this × height too: digits that touch along a stroke leave the ink no minimum there
NARROW, BROAD = 0.08, 1.4  # ... and the parts tried are this narrow to this broad (× height)
PART_BONUS = 0.0  # added per part read; with a segmenter's 'none' class to judge parts, none is needed
TALL = 0.6  # ... parts whose ink is shorter than this × height are not digits (the bar of a 7, a 5's flag)
PEN, CUT_COST = 0.125, 0.15  # a cut costs CUT_COST per pen width (PEN × height) of ink it crosses
BAND = 0.1  # ... along a path of least ink that strays at most this × height from its column
WIDEST, WIDTH_COST = 1.1, 1.0  # a part wider than WIDEST × height costs WIDTH_COST per (height × 0.1) beyond


@dataclass
class Digit:
    """One digit of a number: the class, its probability, where its ink is (x0, y0, x1, y1) in the picture's
    pixels, and the uint8 (1, 28, 28) image the model saw."""

    label: str
    index: int
    confidence: float
    box: tuple[int, ...]
    image: torch.Tensor = field(repr=False)


@dataclass
class NumberReading:
    """One input's number, its digits left to right, or an error message; `source` names the input."""

    source: str
    digits: list[Digit] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def number(self) -> str:
        return "".join(digit.label for digit in self.digits)

    @property
    def confidence(self) -> float:
        """The product of the digits' probabilities: how likely every digit is right, if they err independently."""
        return float(np.prod([digit.confidence for digit in self.digits]))

    def to_dict(self) -> dict:
        """The JSON form: {file, number, confidence, digits: [{label, confidence, box}]}, or {file, error}."""
        if not self.ok:
            return {"file": self.source, "error": self.error}
        return {
            "file": self.source,
            "number": self.number,
            "confidence": self.confidence,
            "digits": [
                {"label": digit.label, "confidence": digit.confidence, "box": list(digit.box)} for digit in self.digits
            ],
        }


def read_number(
    model: nn.Module,
    image,
    classes=tuple("0123456789"),
    options: PreprocessOptions = PreprocessOptions(),
    judge: nn.Module | None = None,
) -> NumberReading:
    """Read the number written in one picture (a path, PIL image or array); ImageError if no digit is found
    or more than MAX_DIGITS are."""
    return read_numbers(model, [image], classes, options, errors="raise", judge=judge)[0]


def read_numbers(
    model: nn.Module,
    images,
    classes=tuple("0123456789"),
    options: PreprocessOptions = PreprocessOptions(),
    errors: str = "raise",
    batch_size: int = 512,
    judge: nn.Module | None = None,
) -> list[NumberReading]:
    """Read the number in each picture, in order (inputs as for predict.predict: files, folders, images).

    errors="raise" raises the first ImageError; errors="collect" puts it in that input's reading.
    Touching digits are parted where `judge` (a segmenter, see digitlab.inference.segmenter; default: `model`
    itself) reads the parts most confidently; `model` then reads the digits, all the pictures'
    digits together, `batch_size` at a time.
    """
    if errors not in ("raise", "collect"):
        raise ConfigError(f"errors must be 'raise' or 'collect', got {errors!r}")
    readings, prepared = [], []
    for source, item in _inputs(images):
        try:
            prepared.append(number_digits(_picture(item), options, source, judge or model))
            readings.append(NumberReading(source))
        except ImageError as error:
            if errors == "raise":
                raise error if error.source else ImageError(error.problem, source) from None
            readings.append(NumberReading(source, error=error.problem))
    if prepared:
        _classify(model, [reading for reading in readings if reading.ok], prepared, classes, batch_size)
    return readings


def number_digits(
    image, options: PreprocessOptions = PreprocessOptions(), source: str | None = None, model: nn.Module | None = None
) -> list[Preprocessed]:
    """The digits of a picture of a number, left to right, each prepared as a single digit would be.

    With a `model`, blobs that may hold touching digits are cut where the model reads the parts
    most confidently (see `segment`); without one, by their width alone.
    """
    if options.legacy:  # the 0.1 pipeline has no pieces to segment: its nearest equivalent here
        options = PreprocessOptions(flatten=False, clean=False, stroke=False, deskew=options.deskew)
    original, scale = working_gray(image)
    ink, gray = writing_ink(original, flatten=options.flatten)
    mask = all_strokes(ink, clean=options.clean)
    tilt = line_tilt(mask)
    if tilt:  # a line written at a slant is turned level, then read
        ink, gray = writing_ink(level(gray, tilt), flatten=options.flatten)  # dark areas dropped here too
        mask = all_strokes(ink, clean=options.clean)
    prepare = lambda keep: finish(*digit_field(ink, keep, options), scale, options)  # noqa: E731
    judge = None
    if model is not None:
        judge = lambda masks: _log_confidence(  # noqa: E731
            model, [glance(ink, keep, scale, options) for keep in masks]
        )
    masks = segment(mask, judge)
    if len(masks) > MAX_DIGITS:
        raise ImageError(f"found {len(masks)} digits; a number may have at most {MAX_DIGITS}", source)
    digits = [prepare(keep) for keep in masks]
    if tilt:  # boxes as they lie in the picture, not in the turned copy
        back = lambda box: box_before_turn(tuple(v / scale for v in box), tilt, gray.shape, original.shape)  # noqa: E731
        digits = [dataclasses.replace(d, box=tuple(round(v * scale) for v in back(d.box))) for d in digits]
    return digits


def glance(ink, keep: np.ndarray, scale: float, options: PreprocessOptions) -> Preprocessed:
    """A candidate part prepared for the judge: as a digit is, but without the stroke redraw. Parts are many
    (about a hundred per blob of touching digits), the redraw costs ~2 ms each, and the segmenter was
    trained on parts prepared this way (digitlab.inference.segmenter)."""
    quick = dataclasses.replace(options, stroke=False)
    return finish(*digit_field(ink, keep, quick), scale, quick)


def segment(mask: np.ndarray, judge=None) -> list[np.ndarray]:
    """The masks (each the shape of `mask`) of the digits in a mask of ink (H, W) bool, left to right.

    A blob wider than WIDE × the digits' height may hold touching digits. `judge`, given a list of
    digit masks, returns each one's log-probability under the model; with it, such a blob is cut
    along the paths of least ink that make the most confident reading (`_best_cuts`); without it,
    into as many equal parts as its width suggests (`_split`).
    """
    labels, count = ndimage.label(mask, np.ones((3, 3)))
    sizes = ndimage.sum_labels(mask, labels, np.arange(1, count + 1))
    pieces = [
        _Group.of(number + 1, box, sizes[number])
        for number, box in enumerate(ndimage.find_objects(labels))
        if sizes[number] >= DUST * sizes.max()
    ]
    groups = _specks_dropped(_merged(sorted(pieces, key=lambda group: group.left)))
    if not groups:
        raise ImageError("no digit found")
    height = float(np.median([group.height for group in groups]))
    digits = []
    for group in groups:
        keep = np.zeros_like(mask)
        keep[group.rows, group.cols] = np.isin(labels[group.rows, group.cols], group.labels)
        reference = max(height, group.height)
        if group.width < WIDE * reference:
            digits.append(keep)
        elif judge is None:
            digits.extend(_split(keep, group, reference))
        else:
            digits.extend(_best_cuts(keep, group, reference, judge))
    return digits


@dataclass
class _Group:
    """Pieces of ink taken for one digit: their labels, box (rows top:bottom, columns left:right) and pixels."""

    labels: list[int]
    top: int
    bottom: int
    left: int
    right: int
    area: float

    @classmethod
    def of(cls, label: int, box: tuple[slice, slice], area: float) -> _Group:
        return cls([label], box[0].start, box[0].stop, box[1].start, box[1].stop, float(area))

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def rows(self) -> slice:
        return slice(self.top, self.bottom)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.right)

    def joined(self, other: _Group) -> _Group:
        return _Group(
            self.labels + other.labels,
            min(self.top, other.top),
            max(self.bottom, other.bottom),
            min(self.left, other.left),
            max(self.right, other.right),
            self.area + other.area,
        )


def _merged(groups: list[_Group]) -> list[_Group]:
    """Groups (sorted by their left edge) with those stacked in the same columns joined, until none are."""
    merged: list[_Group] = []
    for group in groups:
        while merged and _same_columns(merged[-1], group):
            group = merged.pop().joined(group)
        merged.append(group)
    return merged


def _same_columns(first: _Group, second: _Group) -> bool:
    overlap = min(first.right, second.right) - max(first.left, second.left)
    return overlap >= OVERLAP * min(first.width, second.width)


def _specks_dropped(groups: list[_Group]) -> list[_Group]:
    if not groups:
        return groups
    area, height = max(group.area for group in groups), max(group.height for group in groups)
    return [group for group in groups if group.area >= SPECK_AREA * area or group.height >= SPECK_HEIGHT * height]


def _split(keep: np.ndarray, group: _Group, height: float) -> list[np.ndarray]:
    """`keep` cut into the touching digits it holds (by columns of least ink), or alone if it holds one."""
    expected = group.width / (ASPECT * height)
    if expected < SPLIT:
        return [keep]
    parts = round(expected)
    ink_per_column = keep[:, group.cols].sum(0)
    step = group.width / parts
    reach = max(1, int(CUT_WINDOW * step))
    cuts = [0]
    for number in range(1, parts):
        centre = round(number * step)
        window = np.arange(max(cuts[-1] + 1, centre - reach), min(group.width - 1, centre + reach + 1))
        # the least ink wins; among equals, the column nearest the expected cut
        cuts.append(int(window[np.lexsort((np.abs(window - centre), ink_per_column[window]))[0]]))
    cuts.append(group.width)
    return [part for start, stop in itertools.pairwise(cuts) if (part := _columns(keep, group, start, stop)).any()]


def _height(mask: np.ndarray) -> int:
    rows = np.flatnonzero(mask.any(1))
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def _columns(keep: np.ndarray, group: _Group, start: int, stop: int) -> np.ndarray:
    """The part of `keep` in the group's columns start:stop."""
    part = np.zeros_like(keep)
    columns = slice(group.left + start, group.left + stop)
    part[:, columns] = keep[:, columns]
    return part


def _best_cuts(keep: np.ndarray, group: _Group, height: float, judge) -> list[np.ndarray]:
    """`keep` cut along the candidate paths (`_cut_paths`) whose parts the model reads best: the path through
    the cuts that maximises the sum over parts of (log-probability + PART_BONUS - the ink the cut crosses
    - the width prior), by dynamic programming. Parts narrower than NARROW or wider than BROAD × the height
    are not tried."""
    ink_per_column = ndimage.uniform_filter1d(keep[:, group.cols].sum(0).astype(np.float32), 3)
    reach = max(1, int(MINIMUM_REACH * height))
    lowest = ndimage.minimum_filter1d(ink_per_column, 2 * reach + 1)
    columns = [
        x
        for x in range(1, group.width - 1)
        if (
            ink_per_column[x] <= lowest[x]
            and ink_per_column[x] < ink_per_column[x - 1] + 1e-6
            and ink_per_column[x] < ink_per_column[x + 1]
        )
        or (ink_per_column[x] == 0 and ink_per_column[x - 1] > 0)
    ]
    columns = sorted(set(columns) | set(range(1, group.width - 1, max(1, round(GRID * height)))))
    block = keep[group.rows, group.cols]
    paths, crossed = _cut_paths(block, columns, max(1, int(BAND * height)))
    cuts = [0, *columns, group.width]
    spans = [
        (i, j)
        for i in range(len(cuts))
        for j in range(i + 1, len(cuts))
        if (i, j) == (0, len(cuts) - 1) or NARROW * height <= cuts[j] - cuts[i] <= BROAD * height
    ]
    parts = {span: _between(keep, group, paths[span[0]], paths[span[1]]) for span in spans}
    parts = {span: part for span, part in parts.items() if _height(part) >= TALL * height}
    if not parts:
        return [keep]
    cost = CUT_COST * crossed / (PEN * height)
    scores = {
        span: score - cost[span[1]] - _width_cost(_width(part), height)
        for (span, part), score in zip(parts.items(), judge(list(parts.values())), strict=False)
    }
    best: dict[int, tuple[float, list[tuple[int, int]]]] = {0: (0.0, [])}
    for j in range(1, len(cuts)):
        options = [
            (best[i][0] + scores[(i, j)] + PART_BONUS, best[i][1] + [(i, j)])
            for i in range(j)
            if i in best and (i, j) in scores
        ]
        if options:
            best[j] = max(options, key=lambda option: option[0])
    path = best.get(len(cuts) - 1, (0.0, [(0, len(cuts) - 1)]))[1]
    return [parts[span] for span in path]


def _cut_paths(block: np.ndarray, columns: list[int], band: int) -> tuple[list[np.ndarray], np.ndarray]:
    """For each candidate column, the path from top to bottom (a column per row, moving at most one column
    a row, within ± `band` of the candidate) that crosses the least ink, so that neighbours which overlap
    (a 7's bar over the next digit) are parted along a diagonal rather than a straight column. Returns the
    paths with the block's left and right edges first and last (pixels left of a path's column are left of
    the cut), and the ink each crosses (0 for the edges)."""
    rows, width = block.shape
    paths = [np.zeros(rows, int)]
    crossed = [0.0]
    for column in columns:
        xs = np.arange(max(0, column - band), min(width, column + band + 1))
        ink = block[:, xs].astype(np.float64) + 1e-3 * np.abs(xs - column)  # among equals, the straightest
        total, step = ink[0].copy(), np.zeros(ink.shape, int)
        for row in range(1, rows):
            neighbours = np.stack([np.r_[np.inf, total[:-1]], total, np.r_[total[1:], np.inf]])
            step[row] = neighbours.argmin(0) - 1
            total = neighbours.min(0) + ink[row]
        position = int(total.argmin())
        crossed.append(float(block[:, xs].astype(np.float64)[np.arange(rows), _traced(step, position)].sum()))
        paths.append(xs[_traced(step, position)])
    paths.append(np.full(rows, width))
    crossed.append(0.0)
    return paths, np.asarray(crossed)


def _traced(step: np.ndarray, position: int) -> np.ndarray:
    """The positions, row by row, of the least-ink path ending at `position` in the last row."""
    trace = np.empty(len(step), int)
    for row in range(len(step) - 1, -1, -1):
        trace[row] = position
        position += step[row, position]
    return trace


def _between(keep: np.ndarray, group: _Group, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The part of `keep` between two cut paths (columns per row of the group, relative to its left edge)."""
    xs = np.arange(group.width)
    part = np.zeros_like(keep)
    part[group.rows, group.cols] = keep[group.rows, group.cols] & (xs >= left[:, None]) & (xs < right[:, None])
    return part


def _width(mask: np.ndarray) -> int:
    columns = np.flatnonzero(mask.any(0))
    return int(columns[-1] - columns[0] + 1) if columns.size else 0


def _width_cost(width: int, height: float) -> float:
    """The prior against a part too wide to be one digit: nothing up to WIDEST × height (a wide 0, 2 or 7),
    then WIDTH_COST per tenth of the height beyond, so a blob of several digits is not read as one."""
    return WIDTH_COST * max(0.0, width / height - WIDEST) * 10


def _picture(item):
    if isinstance(item, ImageError):
        raise item
    return load_image(item) if isinstance(item, Path) else item


def _log_confidence(model: nn.Module, prepared: list[Preprocessed]) -> list[float]:
    """The log-probability of the most likely digit for each prepared part. A segmenter (see
    digitlab.inference.segmenter) has an eleventh class, "not one digit", which takes its share but is never the answer."""
    logits = predict_logits(model, torch.stack([digit.image for digit in prepared]))
    return logits.double().log_softmax(1)[:, :DIGITS].max(1).values.tolist()


def _classify(
    model: nn.Module, readings: list[NumberReading], prepared: list[list[Preprocessed]], classes, batch_size: int
) -> None:
    images = torch.stack([digit.image for digits in prepared for digit in digits])
    probabilities = torch.cat(
        [
            predict_logits(model, images[start : start + batch_size]).double().softmax(1)
            for start in range(0, len(images), batch_size)
        ]
    )
    best, indices = probabilities.max(1)
    position = 0
    for reading, digits in zip(readings, prepared, strict=False):
        for digit in digits:
            index = int(indices[position])
            reading.digits.append(Digit(str(classes[index]), index, float(best[position]), digit.box, images[position]))
            position += 1


def compose_number(
    digits, rng: np.random.Generator, touching: bool = False
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """MNIST digits (uint8 28×28 each) written left to right on paper: a uint8 gray page and each digit's
    ink box (x0, y0, x1, y1).

    The digits' heights vary around a size of 30-100 px, their baseline wanders, and the gaps
    between their ink are 12-50% of that size, or with `touching` between -12% and +2% (neighbours
    that overlap or touch). Dark ink on light paper with noise.
    """
    size = rng.uniform(30, 100)
    inks = [_coverage(stroke_mask(np.asarray(digit)), int(size * rng.uniform(0.85, 1.1))) for digit in digits]
    gaps = rng.uniform(-0.12, 0.02, len(inks)) if touching else rng.uniform(0.12, 0.5, len(inks))
    margin = int(size * rng.uniform(0.3, 0.8))
    lefts = margin + np.concatenate([[0], np.cumsum([ink.shape[1] for ink in inks[:-1]] + size * gaps[1:])])
    lefts = np.maximum(lefts.astype(int), 0)
    baseline = margin + int(1.15 * size)
    tops = [baseline - ink.shape[0] + int(size * rng.uniform(-0.08, 0.08)) for ink in inks]
    page = np.full((baseline + margin, int(lefts[-1]) + inks[-1].shape[1] + margin), rng.uniform(200, 245), np.float32)
    darkness = rng.uniform(10, 70)
    boxes = []
    for ink, top, left in zip(inks, tops, lefts, strict=False):
        _place(page, ink, top, int(left), darkness)
        boxes.append((int(left), top, int(left) + ink.shape[1], top + ink.shape[0]))
    page = _noise(page, rng, rng.uniform(1, 4))
    return np.clip(np.rint(page), 0, 255).astype(np.uint8), boxes
