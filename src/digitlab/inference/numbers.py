"""Reading a written number ("2026", a phone number, an amount): its digits found, ordered and classified.

`find_writing` finds the writing in a picture: looked at small, its ink is found against the paper under
it (images.page.writing_ink: shade and dark areas are paper, not ink) and every piece is kept
(ink.all_strokes); dust is dropped, pieces stacked in the same columns (the flag of a 5, a 7's bar, a
stroke broken by a faint pen) are merged and pieces small against the number's digits are dropped as
specks (`_writing_groups`); then the writing's crop is read again at the resolution its digits need,
turned level if the line is slanted. A line reader (digitlab.models.linereader) reads the line whole
and it is parted between the digits it reads (`_line_parts`); without a reader, `segment` cuts blobs
much wider than a digit of their height (neighbours that touch) along paths of least ink where a
judge reads the parts best. Each digit's mask then goes through preprocess.digit_field and finish,
so it reaches the model exactly as a single digit would. `compose_number` lays MNIST digits side by
side on paper: the tests and benchmarks/whole_numbers.py read such numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

from ..config import PreprocessOptions
from ..errors import ConfigError, ImageError
from ..images.decode import SCALE_KEY, WORKING_SIDE
from ..images.ink import Ink, all_strokes
from ..images.page import box_before_turn, dark_on_light, level, line_tilt, writing_ink
from ..images.preprocess import Preprocessed, digit_field, finish, read_picture, working_gray
from ..models.nets import in_preferred_layout
from .evaluate import one_thread, predict_logits
from .linereader import Line, line_image, read_line, read_shift
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
READ_WEIGHT = 1.0  # a digit's class: the reading model's probabilities times the line reader's to this power
UNREAD = 1.0  # ... and a group of ink given no digit read costs as much as a digit misplaced by this × height
LOCATE_SIDE = 512  # px: a picture is first looked at this small, to find where its writing is
DIGIT_ROWS = 48  # px: ... and the writing is then read at the resolution that makes its digits this tall
CROP_MARGIN = 1.0  # ... from a crop this many digits' heights wider than the writing on every side
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
    reader: nn.Module | None = None,
) -> NumberReading:
    """Read the number written in one picture (a path, PIL image or array); ImageError if no digit is found
    or more than MAX_DIGITS are."""
    return read_numbers(model, [image], classes, options, errors="raise", judge=judge, reader=reader)[0]


def read_numbers(
    model: nn.Module,
    images,
    classes=tuple("0123456789"),
    options: PreprocessOptions = PreprocessOptions(),
    errors: str = "raise",
    batch_size: int = 64,
    judge: nn.Module | None = None,
    reader: nn.Module | None = None,
) -> list[NumberReading]:
    """Read the number in each picture, in order (inputs as for predict.predict: files, folders, images).

    errors="raise" raises the first ImageError; errors="collect" puts it in that input's reading.
    With a line `reader` (digitlab.models.linereader) the line is read whole and parted between the digits
    it reads; without one, touching digits are parted where `judge` (a segmenter, see
    digitlab.inference.segmenter; default: `model` itself) reads the parts most confidently. `model` then
    reads the digits, all the pictures' digits together, `batch_size` at a time (64: a batch of 512 held
    ~100 MB of the model's activations at once, for no measurable gain in speed on a CPU).
    """
    if errors not in ("raise", "collect"):
        raise ConfigError(f"errors must be 'raise' or 'collect', got {errors!r}")
    # a line and a number's few digits are small work: one thread reads them several times faster on busy cores
    with one_thread() if reader is not None else contextlib.nullcontext():
        readings, prepared = [], []
        for source, item in _inputs(images):
            try:
                prepared.append(number_digits(item, options, source, judge or model, reader))
                readings.append(NumberReading(source))
            except ImageError as error:
                if errors == "raise":
                    raise error if error.source else ImageError(error.problem, source) from None
                readings.append(NumberReading(source, error=error.problem))
        if prepared:
            _classify(model, [reading for reading in readings if reading.ok], prepared, classes, batch_size)
    return readings


def number_digits(
    image,
    options: PreprocessOptions = PreprocessOptions(),
    source: str | None = None,
    model: nn.Module | None = None,
    reader: nn.Module | None = None,
) -> tuple[list[Preprocessed], list[np.ndarray] | None]:
    """The digits of a picture of a number, left to right, each prepared as a single digit would be; and with a
    `reader`, its probabilities of the ten digits for each (None without one).

    With a line `reader` (digitlab.models.linereader), the line is read whole and parted between the
    digits it reads (`_line_parts`). Otherwise, with a `model`, blobs that may hold touching digits are
    cut where the model reads the parts most confidently (see `segment`); without one, by their width alone.
    """
    if options.legacy:  # the 0.1 pipeline has no pieces to segment: its nearest equivalent here
        options = PreprocessOptions(flatten=False, clean=False, stroke=False, deskew=options.deskew)
    writing = find_writing(image, options)
    ink = writing.ink
    # a digit's box is mapped from the levelled crop back to the picture before it is rounded
    prepare = lambda pixels, box: finish(pixels, writing.to_picture(box), 1.0, options)  # noqa: E731
    reads = None
    if reader is not None:
        masks, reads = _line_parts(reader, ink, writing.mask)
    else:
        judge = None
        if model is not None:
            judge = lambda masks: _log_confidence(  # noqa: E731
                model, [glance(ink, keep, 1.0, options) for keep in masks]
            )
        masks = segment(writing.mask, judge)
    if len(masks) > MAX_DIGITS:
        raise ImageError(f"found {len(masks)} digits; a number may have at most {MAX_DIGITS}", source)
    return [prepare(*digit_field(ink, keep, options)) for keep in masks], reads


@dataclass
class Writing:
    """The ink of a picture's writing (levelled when the line was written at a slant) and its strokes' mask,
    in working pixels; and how to map a box found there back to the picture's own pixels (`to_picture`):
    the turn's angle, the turned and unturned working shapes, picture pixels per working pixel, and where
    the working crop's corner lies in the picture (x, y)."""

    ink: Ink
    mask: np.ndarray
    tilt: float
    turned_shape: tuple[int, int]
    original_shape: tuple[int, int]
    scale: float
    corner: tuple[float, float] = (0.0, 0.0)

    def to_picture(self, box: tuple[float, ...]) -> tuple[float, ...]:
        """A box (x0, y0, x1, y1) in working pixels of the levelled line, in the picture's pixels."""
        if self.tilt:
            box = box_before_turn(box, self.tilt, self.turned_shape, self.original_shape)
        x, y = self.corner
        return tuple(corner + value * self.scale for corner, value in zip((x, y, x, y), box, strict=True))


def find_writing(image, options: PreprocessOptions = PreprocessOptions()) -> Writing:
    """The writing in a picture of a number, found where it is and then read at the resolution its digits need.

    The picture is first looked at small (LOCATE_SIDE): dark areas dropped (images.page.writing_ink), the
    line's tilt measured (images.page.line_tilt) and the digits' height and box found. The box, with a
    margin, is then cut from the picture at a resolution that makes the digits about DIGIT_ROWS px tall (no
    more than the picture holds, and never larger than the working size), turned level if the line is
    slanted, and read again.
    """
    picture = _picture(image)
    gray, scale = working_gray(picture, LOCATE_SIDE)
    dark_ink = dark_on_light(gray)  # the whole picture says it: shade may fill most of a crop of it
    ink, gray = writing_ink(gray, flatten=options.flatten, dark_ink=dark_ink)
    mask = all_strokes(ink, clean=options.clean)
    _, groups = _writing_groups(mask)
    tilt = line_tilt(mask, len(groups))
    if tilt:  # the digits' height and the writing's box are measured along the line: a slanted digit's box is taller
        along = level(mask.astype(np.float32), tilt) > 0.5
        _, groups = _writing_groups(along)
    whole = functools.reduce(_Group.joined, groups)
    height = float(np.median([group.height for group in groups]))
    box: tuple[float, ...] = (whole.left, whole.top, whole.right, whole.bottom)
    if tilt:
        box = box_before_turn(box, tilt, (along.shape[0], along.shape[1]), (mask.shape[0], mask.shape[1]))
    crop, corner = _crop(picture, box, scale, CROP_MARGIN * height)
    zoom = DIGIT_ROWS / height  # working pixels of the crop per working pixel of the small look
    side = min(WORKING_SIDE, max(8, round(zoom * max(crop_side / scale for crop_side in _size(crop)))))
    located = scale
    gray, scale = working_gray(crop, side)
    original = gray.shape
    if tilt:
        gray = level(gray, tilt)
    ink, gray = writing_ink(gray, flatten=options.flatten, digit_rows=height * located / scale, dark_ink=dark_ink)
    mask = all_strokes(ink, clean=options.clean)
    return Writing(ink, mask, tilt, (gray.shape[0], gray.shape[1]), (original[0], original[1]), scale, corner)


def _size(picture) -> tuple[int, int]:
    """Width and height of a PIL image or an array (H, W[, C]), in the picture's own pixels."""
    if isinstance(picture, Image.Image):
        factor = float(picture.info.get(SCALE_KEY, 1.0))
        return round(picture.size[0] * factor), round(picture.size[1] * factor)
    return picture.shape[1], picture.shape[0]


def _crop(picture, box: tuple[float, ...], scale: float, margin: float):
    """The part of `picture` (PIL image or array) under `box` (x0, y0, x1, y1 in working pixels at `scale`
    picture pixels each) widened by `margin` working pixels on every side, and its corner (x, y) in the
    picture's pixels."""
    width, height = _size(picture)
    x0, y0 = max(0, (box[0] - margin) * scale), max(0, (box[1] - margin) * scale)
    x1, y1 = min(width, (box[2] + margin) * scale), min(height, (box[3] + margin) * scale)
    if isinstance(picture, Image.Image):
        factor = float(picture.info.get(SCALE_KEY, 1.0))
        left, top, right, bottom = (round(value / factor) for value in (x0, y0, x1, y1))
        crop = picture.crop((left, top, right, bottom))
        crop.info[SCALE_KEY] = factor
        return crop, (round(x0 / factor) * factor, round(y0 / factor) * factor)
    return picture[round(y0) : round(y1), round(x0) : round(x1)], (round(x0), round(y0))


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
    labels, groups = _writing_groups(mask)
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


def _writing_groups(mask: np.ndarray) -> tuple[np.ndarray, list[_Group]]:
    """The pieces of a mask of ink (labelled (H, W)) and their groups, left to right: dust dropped, pieces
    stacked in the same columns merged, specks dropped. ImageError if no group is left."""
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
    return labels, groups


def writing_line(ink: Ink, mask: np.ndarray) -> tuple[Line, np.ndarray, list[_Group]]:
    """The line reader's input for the writing in `mask` (linereader.line_image), the mask of the ink it
    holds (dust and specks dropped, see `_writing_groups`) and that ink's groups."""
    labels, groups = _writing_groups(mask)
    keep = np.isin(labels, [label for group in groups for label in group.labels])
    return line_image(ink, keep), keep, groups


def _line_parts(reader: nn.Module, ink: Ink, mask: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The digits' masks, left to right, of the line of writing in `mask`, and the line `reader`'s
    probabilities (10,) for each (uniform where it read none there).

    The reader says how many digits there are and roughly where: a digit's centre lies about
    `read_shift(reader)` × height right of the frames it was read in (stored with the reader). The digits read are shared out, in order,
    among the groups of ink (`_writing_groups`) so that they lie where they were read (`_shares`). A
    group given one digit, or none, is one digit; a group given several (neighbours that touch) is cut
    into that many parts along the paths of least ink near where the reader placed the gaps between them.
    """
    line, keep, groups = writing_line(ink, mask)
    if len(groups) > MAX_DIGITS:  # a page of text, or noise: not worth reading
        raise ImageError(f"found {len(groups)} digits; a number may have at most {MAX_DIGITS}")
    found = read_line(reader, line)
    height = float(np.median([group.height for group in groups]))
    shift = read_shift(reader) * height
    centres = [(digit.columns[0] + digit.columns[1]) / 2 + shift for digit in found]
    parts: list[np.ndarray] = []
    reads: list[np.ndarray] = []
    first = 0
    for group, share in zip(groups, _shares(groups, centres, height), strict=True):
        mine = found[first : first + share]
        block = np.zeros_like(keep)
        block[group.rows, group.cols] = keep[group.rows, group.cols]
        gaps = [(left + right) / 2 - group.left for left, right in itertools.pairwise(centres[first : first + share])]
        pieces = _split(block, group, max(height, group.height), len(gaps) + 1, gaps) if gaps else [block]
        parts += pieces
        parted = len(pieces) > 1 and len(mine) == len(pieces)  # a digit on its own is the run's model's to read
        reads += [digit.probabilities for digit in mine] if parted else _unread(len(pieces))
        first += share
    return parts, reads


def _unread(count: int) -> list[np.ndarray]:
    return [np.full(DIGITS, 1 / DIGITS)] * count


def _shares(groups: list[_Group], centres: list[float], height: float) -> list[int]:
    """How many of the digits read at `centres` (in order) each group holds, in order: the shares that place
    each digit nearest the centre of its equal part of its group (in heights; UNREAD for a group given
    none), found by dynamic programming over (groups, digits) taken so far."""
    count = len(centres)
    cost = np.full((len(groups) + 1, count + 1), np.inf)
    taken = np.zeros((len(groups) + 1, count + 1), int)
    cost[0, 0] = 0.0
    for number, group in enumerate(groups, start=1):
        for done in range(count + 1):
            for share in range(done + 1):
                start = done - share
                placed = [group.left + (part + 0.5) * group.width / share for part in range(share)]
                misplaced = sum(abs(a - b) for a, b in zip(centres[start:done], placed, strict=True)) / height
                total = cost[number - 1, start] + (misplaced if share else UNREAD)
                if total < cost[number, done]:
                    cost[number, done], taken[number, done] = total, share
    shares, done = [], count
    for number in range(len(groups), 0, -1):
        shares.append(int(taken[number, done]))
        done -= shares[-1]
    return shares[::-1]


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


def _split(
    keep: np.ndarray, group: _Group, height: float, parts: int | None = None, near: list[float] | None = None
) -> list[np.ndarray]:
    """`keep` cut into the touching digits it holds (by columns of least ink): `parts` of them, or as many as
    its width suggests; each cut near its column in `near` (relative to the group's left edge), or
    equally spaced."""
    if parts is None:
        expected = group.width / (ASPECT * height)
        parts = round(expected) if expected >= SPLIT else 1
    if parts == 1:
        return [keep]
    ink_per_column = keep[:, group.cols].sum(0)
    step = group.width / parts
    reach = max(1, int(CUT_WINDOW * step))
    cuts = [0]
    for number in range(1, parts):
        centre = round(near[number - 1] if near else number * step)
        window = np.arange(max(cuts[-1] + 1, centre - reach), min(group.width - 1, centre + reach + 1))
        if not window.size:  # expected beyond the group's edge or the previous cut: no room for this cut
            continue
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
    """A PIL image or array of the picture `item` (a path, an EncodedPicture, a PIL image, an array; an ImageError
    is raised)."""
    if isinstance(item, ImageError):
        raise item
    picture = read_picture(item)
    return picture if isinstance(picture, Image.Image) else np.asarray(picture)


def _log_confidence(model: nn.Module, prepared: list[Preprocessed]) -> list[float]:
    """The log-probability of the most likely digit for each prepared part. A segmenter (see
    digitlab.inference.segmenter) has an eleventh class, "not one digit", which takes its share but is never the answer."""
    # channels-last runs the judge's convolutions ~2x faster on a CPU (its weights are turned once, on loading)
    images = torch.stack([digit.image for digit in prepared])
    logits = predict_logits(model, images, transform=lambda batch: in_preferred_layout(model, batch))
    return logits.double().log_softmax(1)[:, :DIGITS].max(1).values.tolist()


def _classify(
    model: nn.Module,
    readings: list[NumberReading],
    prepared: list[tuple[list[Preprocessed], list[np.ndarray] | None]],
    classes,
    batch_size: int,
) -> None:
    """Each reading's digits, read by `model` from their prepared images; where a line reader also read them,
    by the product of the two's probabilities (READ_WEIGHT: the reader's exponent)."""
    images = torch.stack([digit.image for digits, _ in prepared for digit in digits])
    probabilities = torch.cat(
        [
            predict_logits(model, images[start : start + batch_size]).double().softmax(1)
            for start in range(0, len(images), batch_size)
        ]
    )
    position = 0
    for reading, (digits, reads) in zip(readings, prepared, strict=True):
        for number, digit in enumerate(digits):
            chances = probabilities[position]
            if reads is not None:
                chances = chances * torch.from_numpy(reads[number]).double().clamp_min(1e-6) ** READ_WEIGHT
                chances = chances / chances.sum()
            index = int(chances.argmax())
            reading.digits.append(Digit(str(classes[index]), index, float(chances[index]), digit.box, images[position]))
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
