"""The segmenter: the judge with a "none" class that parts touching digits (digitlab.inference.segmenter)."""

import dataclasses

import pytest
import torch

from digitlab.inference.evaluate import predict_logits
from digitlab.inference.segmenter import CLASSES, NONE, SEGMENTER_FILE, harvest
from digitlab.models.nets import create_model
from digitlab.runs.run import load_model
from digitlab.runs.shipped import load_shipped


@pytest.fixture(scope="module")
def parts(mnist):
    return harvest(mnist.val, numbers=12, seed=3, none_share=1.0)


def test_harvested_parts_are_prepared_digits_labelled_by_their_ink(parts):
    assert parts.images.dtype == torch.uint8 and parts.images.shape[1:] == (1, 28, 28)
    assert set(parts.labels.tolist()) <= set(range(len(CLASSES)))
    whole = parts.labels != NONE
    assert 0 < whole.sum() < (~whole).sum()  # most cuts tried are not one whole digit
    # a part labelled a digit is that digit: the shipped model (which never saw these parts) agrees
    guesses = predict_logits(load_shipped().model, parts.images[whole]).argmax(1)
    assert (guesses == parts.labels[whole]).float().mean() >= 0.9


def test_a_cnn_takes_the_none_class():
    model = create_model("cnn", num_classes=len(CLASSES))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 11)


def test_the_shipped_segmenter_reads_digits_and_refuses_parts(mnist, parts):
    segmenter, about = load_model(SEGMENTER_FILE)
    assert tuple(about["dataset"]["classes"]) == CLASSES
    digits = predict_logits(segmenter, mnist.test.images[:2000])[:, :NONE].argmax(1)  # as the judge reads it
    assert (digits == mnist.test.labels[:2000]).float().mean() >= 0.98
    none = predict_logits(segmenter, parts.images[parts.labels == NONE]).argmax(1)
    assert (none == NONE).float().mean() >= 0.8  # validation parts: the segmenter trained on training digits only


def test_runs_of_digits_use_it_and_runs_of_other_classes_judge_themselves():
    shipped = load_shipped()
    assert shipped.segmenter() is not None and shipped.segmenter() is shipped.segmenter()
    clothes = dataclasses.replace(shipped, classes=tuple(f"class {n}" for n in range(10)))
    assert clothes.segmenter() is None
