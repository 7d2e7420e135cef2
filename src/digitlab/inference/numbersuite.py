"""A suite of written numbers in the three ways real photos of numbers defeat a reader.

- `dark-areas`: a number on a sheet photographed with a large dark area beside it: the phone's own
  shadow across part of the sheet, a desk along one edge, or dark corners under uneven light;
- `slanted`: a number written at a slant across the page, 10-35° either way;
- `long`: ten small digits in a row, about one in three touching its neighbour.

Each picture is a phone-sized photo (JPEG) made from MNIST digits of one split with
`numbers.compose_number`, fixed by (split, count, seed) like the real-world suite: the validation
digits choose thresholds, the test digits only report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.special import expit

from ..data.datasets import Split
from .numbers import compose_number
from .realworld import _grid, _lighting, _noise

CLASSES = ("dark-areas", "slanted", "long")
PHOTO = (1600, 1200)  # width, height of each picture


@dataclass(frozen=True)
class WrittenNumber:
    """One picture: its class, the number written in it, and the JPEG bytes."""

    kind: str
    truth: str
    data: bytes


def render_numbers(
    split: Split, count: int, seed: int = 0, kinds: tuple[str, ...] = CLASSES
) -> Iterator[WrittenNumber]:
    """Yield `count` pictures of each class, numbers made of `split`'s digits."""
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    for number, kind in enumerate(CLASSES):
        if kind not in kinds:
            continue
        rng = np.random.default_rng([seed, number])
        for _ in range(count):
            length = 10 if kind == "long" else int(rng.integers(2, 7))
            picks = rng.integers(0, len(labels), length)
            truth = "".join(str(int(label)) for label in labels[picks])
            yield WrittenNumber(kind, truth, _jpeg(_RENDER[kind](images[picks], rng)))


def _dark_areas(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    number, _ = compose_number(digits, rng, touching=bool(rng.random() < 0.3))
    page, (left, top, right, bottom) = _on_paper(number, rng)
    height, width = page.shape
    rows, cols = _grid(height, width)
    kind = int(rng.integers(3))
    if kind == 0:  # the phone's shadow: a dark band with a soft edge over a third to a half of the sheet
        angle = rng.uniform(0, 2 * math.pi)
        distance = math.cos(angle) * (cols - width / 2) + math.sin(angle) * (rows - height / 2)
        edge = rng.uniform(0.15, 0.3) * min(height, width)
        field = 1 - rng.uniform(0.45, 0.7) * expit((distance - edge) / rng.uniform(10, 40))
    elif kind == 1:  # a desk along one edge, beside the sheet (never over the writing): dark, a little textured
        room = [top / height, 1 - bottom / height, left / width, 1 - right / width]  # free space on each side
        side = int(np.argmax(room))
        reach = min(rng.uniform(0.12, 0.3), 0.8 * room[side])
        sides = [rows < reach * height, rows > (1 - reach) * height, cols < reach * width, cols > (1 - reach) * width]
        mask = sides[side]
        desk = rng.uniform(0.15, 0.4) * (1 + 0.1 * rng.standard_normal(page.shape).astype(np.float32))
        field = np.where(mask, desk, 1.0).astype(np.float32)
    else:  # dark corners: a strong vignette
        radius = np.hypot((cols - width / 2) / (width / 2), (rows - height / 2) / (height / 2))
        field = 1 - rng.uniform(0.55, 0.8) * np.clip(radius - rng.uniform(0.6, 0.9), 0, None) / 0.5
    return page * np.clip(field, 0.05, 1)


def _slanted(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    number, _ = compose_number(digits, rng, touching=bool(rng.random() < 0.3))
    angle = rng.uniform(10, 35) * rng.choice([-1, 1])
    paper = float(np.median(number))
    turned = Image.fromarray(number).rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=int(paper))
    return _on_paper(np.asarray(turned), rng, paper)[0]


def _long(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    number, _ = compose_number(digits, rng, touching=bool(rng.random() < 0.35))
    return _on_paper(number, rng, shrink=rng.uniform(0.35, 0.6))[0]


def _on_paper(
    number: np.ndarray, rng: np.random.Generator, paper: float | None = None, shrink: float = 1.0
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The composed number pasted on a sheet filling a PHOTO-sized picture, under a light gradient; and where
    it was pasted (x0, y0, x1, y1)."""
    width, height = PHOTO
    paper = float(np.median(number)) if paper is None else paper
    scale = min(shrink * rng.uniform(0.5, 0.9) * width / number.shape[1], 0.6 * height / number.shape[0], 3.0)
    size = (max(1, int(number.shape[1] * scale)), max(1, int(number.shape[0] * scale)))
    resized = np.asarray(Image.fromarray(number).resize(size, Image.Resampling.BILINEAR), np.float32)
    page = np.full((height, width), paper, np.float32)
    top, left = int(rng.integers(0, height - size[1] + 1)), int(rng.integers(0, width - size[0] + 1))
    page[top : top + size[1], left : left + size[0]] = resized
    page = _noise(page * _lighting(page.shape, rng, rng.uniform(0.0, 0.2)), rng, rng.uniform(1, 3))
    return page, (left, top, left + size[0], top + size[1])


def _jpeg(page: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(page), 0, 255).astype(np.uint8)).convert("RGB").save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


_RENDER = {"dark-areas": _dark_areas, "slanted": _slanted, "long": _long}
