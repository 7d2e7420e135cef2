"""The server's shortcuts change nothing: the cheap exact paths of preprocessing give the very pixels of the
full computation, and micro-batched answers are the unbatched ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.images import ink
from digitlab.images.preprocess import decode_image, prepare
from digitlab.inference.realworld import CONDITIONS


def canvas_png(digit: np.ndarray) -> bytes:
    """An MNIST digit as the page's 280×280 canvas sends it (white on black, RGBA PNG)."""
    picture = Image.fromarray(digit).resize((280, 280), Image.Resampling.BILINEAR).convert("RGBA")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def pictures(mnist) -> list[bytes]:
    """Canvas drawings of 12 test digits, and 3 digits in every condition of the real-world suite."""
    digits = mnist.test.images[:12, 0].numpy()
    rng = np.random.default_rng(0)
    drawn = [canvas_png(digit) for digit in digits]
    return drawn + [render(digit, rng)[0] for render in CONDITIONS.values() for digit in digits[:3]]


def test_the_shortcuts_of_preprocessing_give_exactly_the_full_pipelines_pixels(mnist, monkeypatch):
    fast = [prepare(decode_image(data)) for data in pictures(mnist)]
    monkeypatch.setattr(ink, "SHORTCUTS", False)
    full = [prepare(decode_image(data)) for data in pictures(mnist)]
    for index, (shortcut, reference) in enumerate(zip(fast, full, strict=True)):
        assert torch.equal(shortcut.image, reference.image), index
        assert shortcut.box == reference.box, index


@pytest.mark.parametrize(
    "values",
    [np.zeros(5), np.array([0, 0, 1, 2], np.float32), np.array([-1, 0, 0, 3]), np.array([-2, -1, 0, 0, 5, 6])],
)
def test_the_fast_median_is_numpys(values):
    assert ink._fast_median(values) == np.median(values)
