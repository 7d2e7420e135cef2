"""Reading whole numbers: segmentation into digits, the reading, the CLI's --number and the web API's /api/number."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digitlab.cli import main
from digitlab.errors import ConfigError, ImageError
from digitlab.inference.evaluate import predict_logits
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
