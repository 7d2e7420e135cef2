"""Outlier exposure (digitlab.training.outliers) on real data: a small CNN trained on MNIST, fine-tuned with
Fashion-MNIST items and scribbles mixed into its batches, then judged on held-out ones.

A model whose exposure did nothing keeps its weights (checked); one whose exposure broke the digits
loses accuracy (checked against the accuracy before); batch norm must keep the statistics of digits.
"""

import dataclasses

import pytest
import torch

import digitlab
from digitlab import TrainConfig
from digitlab.cli import main
from digitlab.data.datasets import Split
from digitlab.inference.evaluate import evaluate
from digitlab.inference.nondigits import KINDS
from digitlab.inference.ood import observe, random_strokes
from digitlab.inference.rejection import METHOD, LearnedDetector
from digitlab.training.outliers import Exposure, ExposurePictures, expose, teach_rejection, teach_run


@pytest.fixture(scope="module")
def fashion():
    return digitlab.load_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def small_cnn(mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cnn"
    config = TrainConfig(model="cnn", model_kwargs={"channels": [8, 16, 16]}, epochs=1, lr=3e-3, train_size=8000)
    return digitlab.train(config.replace(out=str(out)), dataset=mnist)


@pytest.fixture(scope="module")
def pictures(mnist, fashion):
    """Digits and non-digits as predict would hand them over: here MNIST's own and Fashion-MNIST's 28×28 pictures."""
    val_nondigits = torch.cat([random_strokes(300, seed=5), fashion.val.images[:300]])
    return ExposurePictures(
        digits=mnist.train.images[:3000],
        nondigits=torch.cat([random_strokes(1500, seed=1), fashion.train.images[:1500]]),
        val_digits=mnist.val.images[:2000],
        val_nondigits=val_nondigits,
        val_refused=torch.zeros(len(val_nondigits), dtype=torch.bool),
        val_kinds=torch.tensor([KINDS.index("scribbles")] * 300 + [KINDS.index("fashion")] * 300),
    )


def small(mnist, count: int = 2000):
    train = Split(mnist.train.images[:count], mnist.train.labels[:count])
    return dataclasses.replace(mnist, train=train)


def test_exposure_changes_the_features_keeps_batch_norm_and_the_digits(small_cnn, mnist, pictures):
    model = digitlab.load_run(small_cnn.path).model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    accuracy = evaluate(model, mnist.val)["accuracy"]
    history = expose(model, small(mnist).train, pictures.nondigits, small_cnn.config.augmentation(), Exposure(epochs=2))
    after = model.state_dict()
    assert [record["epoch"] for record in history] == [1, 2] and history[1]["loss"] < history[0]["loss"]
    statistics = [name for name in before if "running_" in name]
    assert statistics and all(torch.equal(before[name], after[name]) for name in statistics)
    assert not torch.equal(before["classifier.2.weight"], after["classifier.2.weight"])
    assert evaluate(model, mnist.val)["accuracy"] >= accuracy - 0.01
    assert not model.training


def test_the_exposed_judge_turns_away_held_out_non_digits(small_cnn, mnist, fashion, pictures):
    model = digitlab.load_run(small_cnn.path).model
    detector, _ = teach_rejection(
        model, small(mnist), pictures, small_cnn.config.augmentation(), Exposure(epochs=1), 0.99
    )
    rejected = lambda images: detector.rejects(detector.score(observe(model, images))).double().mean()  # noqa: E731
    assert rejected(mnist.val.images[:2000]) == pytest.approx(0.01, abs=0.002)  # its threshold: the 0.99 quantile
    assert rejected(mnist.test.images[:2000]) <= 0.03
    assert rejected(fashion.test.images[:2000]) >= 0.97
    assert rejected(random_strokes(1000, seed=9)) >= 0.9


def test_teach_run_stores_the_judge_in_the_run_and_its_file(small_cnn, pictures):
    report = teach_run(small_cnn, exposure=Exposure(epochs=0), quantile=0.99, pictures=pictures)
    assert set(report["val_turned_away"]) == {*KINDS, "all"} and report["val_turned_away"]["fashion"] >= 0.95
    assert small_cnn.metrics["rejection"]["threshold"] == report["threshold"]
    assert small_cnn.metrics["test_accuracy"] == report["test_accuracy"] > 0.9
    loaded = digitlab.load_run(small_cnn.path)
    assert isinstance(loaded.ood, LearnedDetector) and loaded.ood.method == METHOD
    assert loaded.metrics["rejection"]["threshold"] == report["threshold"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--epochs", "-1"], "outlier exposure out of range"), (["--nondigits", "0"], "at least one digit")],
)
def test_calibrate_learn_refuses_bad_settings_in_one_line(small_cnn, capsys, flags, message):
    assert main(["calibrate", str(small_cnn.path), "--learn", *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error


def test_exposure_with_weight_zero_fine_tunes_on_the_digits_alone(small_cnn, mnist):
    """Exposure(weight=0) is a plain fine-tune (benchmarks/ship_styles.py): no non-digits are needed or drawn."""
    model = digitlab.load_run(small_cnn.path).model
    before = model.state_dict()["classifier.2.weight"].clone()
    train = Split(mnist.train.images[:256], mnist.train.labels[:256])
    augmentation, exposure = small_cnn.config.augmentation(), Exposure(epochs=1, weight=0.0, digits_per_batch=64)
    history = expose(model, train, mnist.train.images[:0], augmentation, exposure)
    assert len(history) == 1 and history[0]["loss"] < 2.3  # chance is ln 10; the trained model starts far below
    assert not torch.equal(before, model.state_dict()["classifier.2.weight"])
