"""The judge that parts touching digits: a digit classifier with an eleventh class, "not one digit".

To read "34" written with the 3 touching the 4, `numbers.segment` tries many cuts and keeps those
whose parts the judge reads most confidently. A plain digit classifier is a poor judge: it reads
half a 0 as a confident 1, and a squeezed pair of digits as a confident 8, because it has never
been asked to say "neither". The segmenter is taught to: its training set is MNIST's digits plus
the parts that `segment` itself tries on numbers composed from MNIST digits (`compose_number`),
each labelled by where its ink came from, a whole digit (that digit's class) or anything else
(class 10, "none": a fragment, two digits, a digit with most of its neighbour). Parts that are
nearly but not quite one digit are left out rather than guessed.

The training digits come from the training split and the validation digits from the validation
split, so the test split stays unseen. `benchmarks/ship_segmenter.py` trains the one shipped
inside the package (SEGMENTER_FILE), which `Run.read_number` uses when it reads digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import PreprocessOptions
from ..data.datasets import Dataset, Split
from ..images.ink import all_strokes, find_ink
from ..images.preprocess import working_gray
from .numbers import compose_number, glance, segment

SEGMENTER_FILE = Path(__file__).parents[1] / "weights" / "digitlab-segmenter.safetensors"
CLASSES = (*"0123456789", "none")
NONE = len(CLASSES) - 1
WHOLE = 0.92  # a part is a digit when it holds this share of that digit's ink and its ink is this share that digit's
PARTIAL_SHARE, PARTIAL_COVER = 0.8, 0.75  # ... and "none" below either; in between it is left out
OPTIONS = PreprocessOptions()  # the default preprocessing, which the runs that read numbers use


def training_set(mnist: Dataset, numbers: int = 2000, seed: int = 0, none_share: float = 0.25) -> Dataset:
    """MNIST's splits plus the parts of `numbers` composed numbers (train) and a fifth as many (validation),
    each number's digits drawn from that split; "none" parts are kept with probability `none_share`
    (there are about ten of them for every whole digit)."""
    parts = {
        "train": harvest(mnist.train, numbers, seed, none_share),
        "val": harvest(mnist.val, max(1, numbers // 5), seed + 1, none_share),
    }
    joined = {name: _joined(getattr(mnist, name), part) for name, part in parts.items()}
    return Dataset(f"{mnist.name}-parts", CLASSES, joined["train"], joined["val"], mnist.test, dict(mnist.sha256))


def harvest(split: Split, numbers: int, seed: int = 0, none_share: float = 0.25) -> Split:
    """The labelled parts `segment` tries on `numbers` numbers of 2-5 digits of `split`, two in three with
    touching neighbours: uint8 images (N, 1, 28, 28) prepared as numbers.number_digits prepares
    them (numbers.glance), and labels (N,) in 0-10."""
    rng = np.random.default_rng(seed)
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for number in range(numbers):
        picks = rng.choice(len(split), int(rng.integers(2, 6)), replace=False)
        page, boxes = compose_number(split.images[picks, 0].numpy(), rng, touching=number % 3 != 0)
        for image, owner in _parts(page, boxes):
            label = NONE if owner is None else int(split.labels[picks[owner]])
            if label != NONE or rng.random() < none_share:
                images.append(image)
                labels.append(label)
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64))


def _parts(page: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> list[tuple[torch.Tensor, int | None]]:
    """Each part `segment` judges on the page: its image, and which digit it is (an index into `boxes`), or
    None when it is not one whole digit. Parts that are nearly one digit are not returned."""
    gray, scale = working_gray(page)
    ink = find_ink(gray, flatten=OPTIONS.flatten)
    strokes = all_strokes(ink, clean=OPTIONS.clean)
    owner = _column_owners(gray.shape[1], scale, boxes)
    digit_ink = np.array([(strokes & (owner == digit)).sum() for digit in range(len(boxes))])
    found: list[tuple[torch.Tensor, int | None]] = []

    def judge(masks: list[np.ndarray]) -> list[float]:
        for keep in masks:
            inside = np.array([(keep & (owner == digit)).sum() for digit in range(len(boxes))])
            digit = int(inside.argmax())
            share, cover = inside[digit] / max(1, keep.sum()), inside[digit] / max(1, digit_ink[digit])
            if share >= WHOLE and cover >= WHOLE:
                found.append((glance(ink, keep, scale, OPTIONS).image, digit))
            elif share < PARTIAL_SHARE or cover < PARTIAL_COVER:
                found.append((glance(ink, keep, scale, OPTIONS).image, None))
        return [0.0] * len(masks)  # the harvest only records the parts; which cuts segment then keeps is moot

    segment(strokes, judge)
    return found


def _column_owners(width: int, scale: float, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """For each column of the working picture (1, W), the digit whose box holds it (the nearest box centre
    where boxes of touching digits overlap), or -1 between digits."""
    centres = (np.arange(width) + 0.5) * scale
    owner, nearest = np.full(width, -1), np.full(width, np.inf)
    for digit, (x0, _, x1, _) in enumerate(boxes):
        distance = np.abs(centres - (x0 + x1) / 2)
        closer = (centres >= x0) & (centres < x1) & (distance < nearest)
        owner[closer], nearest[closer] = digit, distance[closer]
    return owner[None, :]


def _joined(split: Split, parts: Split) -> Split:
    return Split(torch.cat([split.images, parts.images]), torch.cat([split.labels, parts.labels]))
