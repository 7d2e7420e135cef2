"""The writing on a photographed page (digitlab.images.page): dark areas that are not ink, lines written at a
slant, and boxes mapped back from the turned picture; then whole numbers read through them."""

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab.images.ink import all_strokes, find_ink
from digitlab.images.page import box_before_turn, level, line_tilt, writing_ink
from digitlab.inference.numbers import compose_number
from digitlab.inference.numbersuite import CLASSES, render_numbers


def line_mask(angle: float, length: int = 400, thickness: int = 6) -> np.ndarray:
    """A thick straight stroke through the middle of a 600×600 mask, falling `angle` degrees to the right."""
    image = Image.new("L", (600, 600), 0)
    dx, dy = length / 2 * math.cos(math.radians(angle)), length / 2 * math.sin(math.radians(angle))
    ImageDraw.Draw(image).line((300 - dx, 300 - dy, 300 + dx, 300 + dy), fill=255, width=thickness)
    return np.asarray(image) > 0


@pytest.mark.parametrize("angle", [-35.0, -12.0, 8.0, 30.0])
def test_the_tilt_of_a_line_is_its_angle(angle):
    assert line_tilt(line_mask(angle)) == pytest.approx(angle, abs=1.0)


@pytest.mark.parametrize("angle", [0.0, 2.0, 70.0, 90.0])
def test_level_lines_and_columns_are_left_alone(angle):
    assert line_tilt(line_mask(angle)) == 0.0  # within LEVEL_WITHIN of level, or steeper than STEEPEST


def test_a_round_blob_has_no_tilt():
    rows, cols = np.mgrid[0:200, 0:200]
    assert line_tilt((rows - 100) ** 2 + (cols - 100) ** 2 < 60**2) == 0.0


def test_a_box_in_the_turned_picture_maps_back_to_where_it_was():
    gray = np.full((300, 500), 230, np.float32)
    gray[40:50, 380:390] = 20  # a dark dot near the top right
    turned = level(gray, 25.0)
    rows, cols = np.nonzero(turned < 120)
    box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    x0, y0, x1, y1 = box_before_turn(box, 25.0, turned.shape, gray.shape)
    assert abs((x0 + x1) / 2 - 385) <= 3 and abs((y0 + y1) / 2 - 45) <= 3


def test_a_desk_along_the_edge_is_not_ink_and_the_writing_stays():
    rng = np.random.default_rng(0)
    page, _ = compose_number(np.full((3, 28, 28), 0, np.uint8) + _bars(), rng)
    gray = np.full((600, 800), float(np.median(page)), np.float32)
    gray[200 : 200 + page.shape[0], 100 : 100 + page.shape[1]] = page
    gray[:120] *= 0.25  # a dark desk along the top edge
    ink, _ = writing_ink(gray)
    mask = all_strokes(ink)
    assert not mask[:120].any()  # the desk is gone
    assert mask[200 : 200 + page.shape[0], 100 : 100 + page.shape[1]].sum() >= 0.8 * (find_ink(gray).mask[200:].sum())


def _bars() -> np.ndarray:
    """A 28×28 digit-like stroke (a thick vertical bar) in MNIST's polarity."""
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255
    return digit


@pytest.mark.slow  # reads six phone-sized photos with the shipped model and its segmenter
def test_numbers_on_a_slant_and_beside_a_dark_area_are_read(mnist):
    from digitlab.runs.shipped import load_shipped

    photos = [photo for photo in render_numbers(mnist.val, 2, seed=1) if photo.kind in CLASSES[:2]]
    # the page is under test, so the digits are found as when it was written: by the segmenter (the line
    # reader, the default since, reads the second photo's 5832 as 832: its odd 5 is read as no digit)
    pictures = [Image.open(io.BytesIO(photo.data)) for photo in photos]
    readings = load_shipped().read_number(pictures, reader="segmenter")
    assert [reading.number for reading in readings] == [photo.truth for photo in photos]
    for reading in readings:  # boxes lie in the photo, left to right
        lefts = [digit.box[0] for digit in reading.digits]
        assert all(0 <= digit.box[0] < digit.box[2] <= 1600 for digit in reading.digits)
        assert lefts == sorted(lefts)
