"""The drawing path (digitlab.images.drawing): which pictures take it, and MNIST's layout and pen as batched
tensor operations, held to what they promise on pictures with known answers."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.errors import ImageError
from digitlab.images.drawing import BOX, CENTRE, Drawings, drawing_pixels, stack_drawings
from digitlab.images.preprocess import decode_image, prepare
from digitlab.inference.realworld import CONDITIONS, canvas, phone_page

DRAWINGS = Drawings()


def bar(width: int, height: int, side: int = 280) -> np.ndarray:
    """A white upright bar `width` px wide and `height` px tall on a black pad `side` px square."""
    pad = np.zeros((side, side), np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    pad[top : top + height, left : left + width] = 255
    return pad


def picture(pixels: np.ndarray, mode: str = "L") -> Image.Image:
    return Image.fromarray(pixels).convert(mode)


def digit_of(pad: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        digits, _ = DRAWINGS(stack_drawings([pad]))
    return digits[0, 0].numpy()


@pytest.fixture(scope="module")
def seven():
    from digitlab.data.datasets import load_dataset

    test = load_dataset("mnist").test
    return test.images[0, 0].numpy()  # a 7


def test_the_pad_is_a_drawing_and_paper_is_not(seven):
    rng = np.random.default_rng(0)
    data, _ = canvas(seven, rng)
    assert drawing_pixels(decode_image(data)) is not None  # the page's pad: RGBA, gray, opaque, mostly black
    photo, _ = phone_page(seven, rng)
    assert drawing_pixels(photo) is None
    for name, render in CONDITIONS.items():  # every other picture of the real-world suite is paper
        if name != "canvas":
            assert all(drawing_pixels(decode_image(render(seven, rng)[0])) is None for _ in range(3)), name
    pad = bar(20, 200)
    coloured = np.stack([pad, pad // 2, pad], -1)
    assert drawing_pixels(Image.fromarray(coloured, "RGB")) is None
    translucent = np.stack([pad, pad, pad, np.full_like(pad, 200)], -1)
    assert drawing_pixels(Image.fromarray(translucent, "RGBA")) is None
    assert drawing_pixels(picture(255 - pad)) is None  # dark ink on white: paper


@pytest.mark.parametrize(
    ("width", "height", "pen"),
    [
        (20, 200, (1.8, 2.2)),  # the pad's pen on a big digit (2 px fitted): MNIST's range, left as it is
        (20, 50, (1.8, 3.6)),  # a small digit drawn with the same pen (8 px): thinned into MNIST's range
        (3, 260, (1.8, 3.6)),  # a hairline across the pad (0.2 px): thickened into it
    ],
)
def test_the_pen_is_brought_into_mnists_range(width, height, pen):
    """MNIST's pens span 1.8-3.6 px (10th to 90th percentile); the frame's 2 px per output pixel make the
    changed pen land within about half a pixel of the 2.5 aimed at."""
    digit = digit_of(bar(width, height)) / 255
    rows = np.flatnonzero(digit.sum(1) > 0)
    assert len(rows) in (BOX, BOX + 1)  # the longer side fitted to 20 px
    middle = digit[rows[len(rows) // 2 - 3] : rows[len(rows) // 2 + 3]]
    assert pen[0] <= middle.sum(1).mean() <= pen[1]


def test_the_centre_of_mass_is_at_mnists_centre():
    pad = bar(20, 120)
    pad[80:100, 100:220] = 255  # an L: the mass is off the box's centre
    digit = digit_of(pad)
    index = np.arange(28)
    assert (digit.sum(1) * index).sum() / digit.sum() == pytest.approx(CENTRE, abs=0.5)
    assert (digit.sum(0) * index).sum() / digit.sum() == pytest.approx(CENTRE, abs=0.5)
    assert set(np.unique(digit)) <= set(range(256))  # whole gray levels


def test_a_batch_answers_what_each_drawing_answers_alone(seven):
    """Exactly, for drawings of one size (the pad's); a smaller one padded into the batch lands within a gray
    level (its sample positions are computed against the batch's size, and float rounding may differ). The
    small one is an L: a mirror-symmetric drawing's centre of mass falls on a half pixel, where rounding noise
    decides which way it is shifted."""
    rng = np.random.default_rng(1)
    small = bar(12, 90, side=200)
    small[120:132, 94:150] = 255
    pads = [drawing_pixels(decode_image(canvas(seven, rng)[0])) for _ in range(3)] + [small]
    with torch.no_grad():
        together, boxes = DRAWINGS(stack_drawings(pads))
        for index, pad in enumerate(pads):
            alone, box = DRAWINGS(stack_drawings([pad]))
            if pad.shape == pads[0].shape:
                assert torch.equal(alone[0], together[index])
            assert (alone[0] - together[index]).abs().max() <= 1 and torch.equal(box[0], boxes[index])


def test_prepare_takes_the_drawing_path_for_a_drawing_only(seven):
    rng = np.random.default_rng(2)
    data, _ = canvas(seven, rng)
    drawn = prepare(decode_image(data))
    assert np.array_equal(drawn.image[0].numpy(), digit_of(drawing_pixels(decode_image(data))))
    photo, _ = phone_page(seven, rng)
    assert prepare(photo).image.shape == (1, 28, 28)  # the full pipeline
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((280, 280), np.uint8)).save(buffer, format="PNG")
    with pytest.raises(ImageError, match="no ink found"):
        prepare(decode_image(buffer.getvalue()))
