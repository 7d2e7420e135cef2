"""Render MNIST digits as a person's scan or photo would show them, for the preprocessing and predict tests."""

import io

import numpy as np
from PIL import Image


def render_scan(digit: np.ndarray, rng: np.random.Generator, side: int | None = None) -> Image.Image:
    """A uint8 (28, 28) MNIST digit as dark ink on light paper: paper gray 200-240, ink 10-60, upscaled
    (bicubic) to `side` px (default random 40-200), pasted at a random place on a canvas 1.2-2× larger
    per axis, plus Gaussian noise of std 2-8 gray levels. Returns an 8-bit grayscale PIL image."""
    paper, ink = rng.uniform(200, 240), rng.uniform(10, 60)
    picture = (paper - (paper - ink) * digit.astype(np.float32) / 255).astype(np.float32)
    side = side or int(rng.integers(40, 201))
    big = np.asarray(Image.fromarray(picture).resize((side, side), Image.Resampling.BICUBIC))
    height, width = int(side * rng.uniform(1.2, 2.0)), int(side * rng.uniform(1.2, 2.0))
    canvas = np.full((height, width), paper, np.float32)
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    canvas[top : top + side, left : left + side] = big
    canvas += rng.normal(0, rng.uniform(2, 8), canvas.shape)
    return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast; the tests write hundreds
    return buffer.getvalue()
