"""The line reader: a whole line of digits read by a CNN trained with CTC (digitlab.models.linereader,
digitlab.inference.linereader, digitlab.training.linereader)."""

import dataclasses

import numpy as np
import pytest
import torch

from digitlab.images.ink import Ink
from digitlab.inference.linereader import INK_ROWS, LINE_READER_FILE, READ_SHIFT, decode, line_image, read_shift
from digitlab.models.linereader import BLANK, LINE_HEIGHT, STRIDE
from digitlab.models.nets import create_model
from digitlab.runs.run import load_model, save_model
from digitlab.runs.shipped import load_shipped
from digitlab.training.linereader import augmented, make_lines, measure_read_shift, read_exactly, train_line_reader


def _frames(classes: list[int]) -> np.ndarray:
    """Per-frame probabilities (11, frames) that put 0.9 on the given class of each frame."""
    probabilities = np.full((BLANK + 1, len(classes)), 0.01)
    probabilities[classes, np.arange(len(classes))] = 0.9
    return probabilities


def test_decoding_merges_repeats_and_drops_blanks_but_keeps_a_digit_twice_across_a_blank():
    found = decode(_frames([BLANK, 1, 1, BLANK, 1, 7, 7, 7, BLANK]))
    assert [digit for digit, *_ in found] == [1, 1, 7]
    assert [(first, stop) for *_, first, stop in found] == [
        (STRIDE, 3 * STRIDE),
        (4 * STRIDE, 5 * STRIDE),
        (5 * STRIDE, 8 * STRIDE),
    ]
    assert all(confidence == pytest.approx(0.9) for _, confidence, *_ in found)


def test_a_line_picture_holds_the_ink_scaled_to_its_rows_with_a_margin():
    values = np.zeros((100, 300), np.float32)
    values[20:80, 40:260] = 50.0  # a block of ink 60 rows tall, 220 wide
    keep = values > 0
    line = line_image(Ink(values, keep, 1.0), keep)
    assert line.picture.shape[0] == LINE_HEIGHT and line.picture.shape[1] % STRIDE == 0
    rows = np.flatnonzero(line.picture.max(1) > 0.5)
    assert len(rows) == INK_ROWS and line.picture.max() == pytest.approx(1.0)
    columns = np.flatnonzero(line.picture.max(0) > 0.5)
    # a line column maps back to the working picture's columns
    assert line.left + columns[0] / line.factor == pytest.approx(40, abs=1 / line.factor + 0.5)
    assert line.left + (columns[-1] + 1) / line.factor == pytest.approx(260, abs=1 / line.factor + 0.5)


def test_the_reader_gives_a_frame_per_four_columns():
    reader = create_model("line-reader")
    assert reader(torch.zeros(3, 1, LINE_HEIGHT, 96)).shape == (3, BLANK + 1, 96 // STRIDE)


def test_the_shipped_reader_reads_validation_lines(mnist):
    reader, about = load_model(LINE_READER_FILE)
    lines = make_lines(mnist.val, 60, seed=11)
    assert read_exactly(reader, lines) >= 0.75  # lines of 1-10 digits it never trained on
    assert about["metrics"]["val_exact"] >= 0.8


@pytest.mark.slow  # half a minute of CTC training on 2 cores
def test_a_short_training_run_lowers_the_ctc_loss(mnist):
    train, val = make_lines(mnist.train, 1500, seed=3), make_lines(mnist.val, 100, seed=4)
    _, history = train_line_reader(train, val, epochs=3, batch_size=32)
    # measured 3.57 -> 2.83 -> 2.68 (reading whole lines takes far longer: the shipped reader's test above); nothing learned stays at 3.57
    assert history[-1]["loss"] < 0.85 * history[0]["loss"]


def test_runs_of_digits_offer_it_and_runs_of_other_classes_do_not():
    shipped = load_shipped()
    assert shipped.line_reader() is not None and shipped.line_reader() is shipped.line_reader()
    clothes = dataclasses.replace(shipped, classes=tuple(f"class {n}" for n in range(10)))
    assert clothes.line_reader() is None


def test_a_recurrent_reader_gives_a_frame_per_four_columns_too():
    reader = create_model("line-reader", recurrent=16, layers=1)
    assert reader(torch.zeros(2, 1, LINE_HEIGHT, 64)).shape == (2, BLANK + 1, 64 // STRIDE)


def test_augmentation_stretches_the_lines_and_their_frames_alike():
    pictures = torch.zeros(3, 1, LINE_HEIGHT, 80)
    frames = torch.tensor([20, 12, 5])
    for seed in range(5):
        stretched, counted = augmented(pictures, frames, torch.Generator().manual_seed(seed), stretch=0.15)
        factor = stretched.shape[-1] / 80
        assert stretched.shape[-1] % STRIDE == 0 and abs(factor - 1) <= 0.15 + STRIDE / 80
        assert counted[0] == stretched.shape[-1] // STRIDE and (counted >= 1).all()
        assert torch.allclose(counted.float(), (frames * factor).floor(), atol=1)


def test_a_reader_file_carries_its_read_shift_and_one_without_reads_with_the_first_readers(tmp_path):
    reader = create_model("line-reader")
    save_model(reader, tmp_path / "new.safetensors", reading={"read_shift": 0.3})
    save_model(reader, tmp_path / "old.safetensors")
    assert read_shift(load_model(tmp_path / "new.safetensors")[0]) == 0.3
    assert read_shift(load_model(tmp_path / "old.safetensors")[0]) == READ_SHIFT
    assert read_shift(reader) == READ_SHIFT


def test_the_shipped_readers_stored_shift_is_where_it_places_validation_digits(mnist):
    reader = load_shipped().line_reader()
    assert reader is not None
    # measured 0.48 on 100 validation numbers; a shift off by a third of a digit's width misplaces the cuts
    assert measure_read_shift(reader, mnist.val, count=30) == pytest.approx(read_shift(reader), abs=0.1)
