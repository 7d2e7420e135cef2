"""Pieces the benchmarks share: the notebook-style per-sample data path, and time-to-accuracy bookkeeping."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import digitlab
from digitlab.data.datasets import Split
from digitlab.files import atomic_write
from digitlab.inference.evaluate import accuracy
from digitlab.training.recipes import apply_recipe
from digitlab.training.train import Tracking, Trainee, build, choose_engine, fit

RESULTS = Path(__file__).parent / "results"


class NotebookDataset(torch.utils.data.Dataset):
    """Per-sample PIL conversion, as torchvision.datasets.MNIST with transforms.ToTensor() does
    (and Normalize(mean, std) after it, when given)."""

    def __init__(self, split: Split, normalize: tuple[float, float] | None = None):
        self.images = split.images.squeeze(1).numpy()
        self.labels = split.labels.tolist()
        self.normalize = normalize

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        picture = Image.fromarray(self.images[index], mode="L")
        array = np.array(picture, np.uint8, copy=True)
        tensor = torch.from_numpy(array).view(picture.size[1], picture.size[0], 1).permute(2, 0, 1).contiguous()
        tensor = tensor.float().div(255)
        if self.normalize is not None:
            tensor = (tensor - self.normalize[0]) / self.normalize[1]
        return tensor, self.labels[index]


def loader_accuracy(model: torch.nn.Module, loader) -> float:
    """Accuracy over a DataLoader, in eval mode (restored afterwards)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.shape[0]
    model.train()
    return correct / total


class Stopwatch:
    """Training time that excludes evaluation: `lap(accuracy)` after each epoch records both."""

    def __init__(self):
        self.seconds, self.epochs, self._started = 0.0, [], None

    def start(self):
        self._started = time.perf_counter()

    def stop(self):
        self.seconds += time.perf_counter() - self._started

    def lap(self, accuracy: float, seconds: float | None = None) -> None:
        self.seconds = self.seconds if seconds is None else self.seconds + seconds
        self.epochs.append({"epoch": len(self.epochs) + 1, "train_seconds": self.seconds, "test_accuracy": accuracy})

    def time_to(self, target: float) -> float | None:
        return time_to(self.epochs, target)


def time_recipe(data: digitlab.Dataset, model: str, recipe: str) -> tuple[Stopwatch, digitlab.TrainConfig]:
    """Train `model --recipe recipe` with digitlab's loop, testing after every epoch (not timed).

    Returns the Stopwatch (training seconds and test accuracy per epoch) and the resolved config.
    """
    config = apply_recipe(digitlab.TrainConfig(model=model), recipe)
    network, optimizer = build(config)
    watch = Stopwatch()

    def on_epoch(record):  # record["seconds"]: that epoch's training (and validation) time
        watch.lap(accuracy(network, data.test), record["seconds"])
        print(
            f"  digitlab {model} epoch {record['epoch']}: {watch.seconds:.1f} s, "
            f"test {watch.epochs[-1]['test_accuracy']:.2%}",
            flush=True,
        )

    fit(
        Trainee(network, optimizer, choose_engine(config, network, optimizer)),
        data,
        config,
        tracking=Tracking(on_epoch=on_epoch),
    )
    return watch, config


def train_or_continue(config: digitlab.TrainConfig, data: digitlab.Dataset) -> digitlab.Run:
    """Train into config.out; a finished run there is reused and an interrupted one resumed, so
    re-running the benchmark continues where it stopped. A run of another config is an error."""
    folder = Path(config.out)
    if not (folder / "config.json").exists():
        return digitlab.train(config, dataset=data)
    saved = digitlab.TrainConfig.from_file(folder / "config.json")
    if saved != config:
        raise SystemExit(f"{folder} holds a run of another config; remove it to train this one")
    if (folder / "metrics.json").exists():
        return digitlab.load_run(folder)
    return digitlab.resume(folder, dataset=data)


def time_to(epochs: list[dict], target: float) -> float | None:
    """Training seconds until test accuracy first reached `target` (epochs as Stopwatch records it), or None."""
    return next(
        (e["train_seconds"] for e in epochs if e["test_accuracy"] is not None and e["test_accuracy"] >= target), None
    )


def tally(predictions, labels) -> dict:
    """Predictions against their true labels (strings), four ways that never overlap: right, wrong (a
    digit named, not this one), refused (turned away as not a digit) and errors (no answer at all).
    Only `right` is a throughput's numerator; the other three are figures of their own."""
    counts = {"right": 0, "wrong": 0, "refused": 0, "errors": 0}
    for prediction, label in zip(predictions, labels, strict=True):
        if not prediction.ok:
            counts["errors"] += 1
        elif prediction.rejected:
            counts["refused"] += 1
        else:
            counts["right" if prediction.label == label else "wrong"] += 1
    return counts


def machine() -> dict:
    return {
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
    }


def write_result(name: str, result: dict, out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        json.dumps({"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), **result}, indent=2)
        + "\n"
    )
    atomic_write(path, lambda temp: Path(temp).write_text(text))
    return path
