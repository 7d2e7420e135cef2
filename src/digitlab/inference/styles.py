"""Ways of writing a digit that MNIST's American writers rarely used, drawn procedurally.

The flagged 1: much of Europe writes a 1 with a long up-stroke to its top (the flag) and a straight
stem; MNIST's 1s are mostly a bare stroke, so a model trained on it reads a flagged 1 as a 7, whose
bar meets its stem at the top right just the same. A 7's bar runs level and its stem slopes down to
the left; the flag falls to the left and the stem stands upright. These pictures are drawn with the
non-digit suite's trembling pen (`nondigits.draw_polylines`) and laid out as MNIST's digits are.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .doodles import Polyline
from .nondigits import draw_polylines, field_of

FLAG_LENGTH = (0.3, 0.7)  # of the 1's height
FLAG_FALL = (20.0, 50.0)  # degrees below level, from the top down to the flag's start


def flagged_one(rng: np.random.Generator) -> Polyline:
    """A 1 as one stroke (x right, y down, 1 tall): from the flag's start up to the top, then down the stem."""
    length, fall = rng.uniform(*FLAG_LENGTH), math.radians(rng.uniform(*FLAG_FALL))
    start = (-length * math.cos(fall), length * math.sin(fall))
    return np.array([start, (0.0, 0.0), (rng.uniform(-0.08, 0.08), 1.0)], np.float32)


def flagged_ones(count: int, seed: int) -> torch.Tensor:
    """`count` flagged 1s as MNIST-style pictures, uint8 (count, 1, 28, 28)."""
    rng = np.random.default_rng([seed, 1])
    fields = [field_of(draw_polylines([flagged_one(rng)], rng)) for _ in range(count)]
    return torch.from_numpy(np.stack(fields))[:, None]
