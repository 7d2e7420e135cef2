import dataclasses
import json
import time

import pytest
import torch

import digitlab
from digitlab import TrainConfig
from digitlab.data.datasets import Split, to_float
from digitlab.errors import ConfigError
from digitlab.images.preprocess import deskew
from digitlab.training.train import deskewed


def test_the_seed_mlp_reaches_93_percent_after_one_epoch(seed_run):
    assert seed_run.metrics["test_accuracy"] >= 0.93
    assert seed_run.metrics["engine"] == "fused"


def test_run_folder_holds_config_metrics_and_a_self_describing_model(seed_run):
    folder = seed_run.path
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.safetensors",
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "train_seconds", "parameters", "history"):
        assert key in metrics
    assert metrics["parameters"] == 25_818
    epoch = metrics["history"][0]
    assert set(epoch) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}
    saved = json.loads((folder / "config.json").read_text())
    assert saved["config"]["lr"] == 5e-3 and saved["config"]["batch_size"] == 64 and saved["config"]["seed"] == 24
    assert saved["dataset"]["sha256"] == digitlab.data.datasets.dataset_info("mnist").sha256
    assert set(saved["versions"]) >= {"torch", "numpy", "digitlab"}
    _, metadata = digitlab.load_model(folder / "model.safetensors")
    assert metadata["model"] == "mlp" and metadata["dataset"]["name"] == "mnist"


def test_evaluate_agrees_with_metrics_json(seed_run):
    loaded = digitlab.load_run(seed_run.path)
    metrics = digitlab.evaluate(loaded)
    assert metrics["accuracy"] == pytest.approx(seed_run.metrics["test_accuracy"], abs=1e-12)
    confusion = torch.tensor(metrics["confusion_matrix"])
    assert confusion.sum() == 10_000 and confusion.diag().sum() / 10_000 == pytest.approx(metrics["accuracy"])
    assert len(metrics["per_class"]) == 10 and all(0 <= row["f1"] <= 1 for row in metrics["per_class"])


def test_autograd_engine_trains_too(mnist):
    run = digitlab.train(TrainConfig(epochs=1, lr=5e-3, engine="autograd"), dataset=mnist, save=False)
    assert run.metrics["engine"] == "autograd" and run.metrics["test_accuracy"] >= 0.93


def test_same_config_and_seed_give_identical_metrics(mnist):
    small = digitlab.Dataset(
        "mnist", mnist.classes, mnist.train.take(6000), mnist.val.take(1000), mnist.test.take(1000)
    )
    config = TrainConfig(epochs=2, batch_size=128)
    first, second = (digitlab.train(config, dataset=small, save=False) for _ in range(2))
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert strip(first.metrics["history"]) == strip(second.metrics["history"])
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_epochs_are_timed_and_a_resumed_run_goes_on_from_the_next_epoch(mnist, tmp_path):
    small = digitlab.Dataset("mnist", mnist.classes, mnist.train.take(3000), mnist.val.take(500), mnist.test.take(500))
    config = TrainConfig(epochs=1, batch_size=128, out=str(tmp_path / "run"))
    started = time.perf_counter()
    digitlab.train(config, dataset=small)
    wall = time.perf_counter() - started
    resumed = digitlab.resume(tmp_path / "run", epochs=2, dataset=small)
    history = resumed.metrics["history"]
    assert [record["epoch"] for record in history] == [1, 2]  # (exactness of a resume: test_reliability)
    assert 0 < history[0]["seconds"] <= wall


def test_defaults_are_the_seed_recipe():
    config = TrainConfig()
    assert (config.model, config.optimizer, config.lr, config.batch_size, config.epochs, config.seed) == (
        "mlp",
        "adam",
        1e-3,
        64,
        20,
        24,
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": -1}, "epochs must be at least 1"),
        ({"batch_size": 0}, "batch size"),
        ({"lr": 0}, "learning rate"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
    ],
)
def test_bad_settings_are_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change)


def test_training_into_a_finished_run_folder_is_refused(seed_run, mnist):
    with pytest.raises(digitlab.RunError, match="already holds a run"):
        digitlab.train(TrainConfig(epochs=1, out=str(seed_run.path)), dataset=mnist)


def test_the_fused_engine_is_refused_where_it_cannot_run(mnist):
    small = digitlab.Dataset("mnist", mnist.classes, mnist.train.take(256), mnist.val.take(64), mnist.test.take(64))
    for config in (TrainConfig(model="cnn", engine="fused"), TrainConfig(engine="fused", optimizer="sgd")):
        with pytest.raises(ConfigError, match="engine 'fused' needs an MLP without dropout or teacher"):
            digitlab.train(config.replace(epochs=1), dataset=small, save=False)


def test_deskewed_straightens_every_digit_of_every_split(mnist):
    # chunks sliced wrong (start >> 10_000 for start + 10_000) would leave no digit at all
    small = dataclasses.replace(
        mnist, **{name: Split(part.images[:7], part.labels[:7]) for name, part in mnist.splits().items()}
    )
    straight = deskewed(small)
    for name, before in small.splits().items():
        after = getattr(straight, name)
        assert after.images.shape == before.images.shape and after.images.dtype == torch.uint8
        assert torch.equal(after.labels, before.labels)
        expected = (deskew(to_float(before.images)) * 255).round().clamp(0, 255).to(torch.uint8)
        assert torch.equal(after.images, expected) and not torch.equal(expected, before.images)
