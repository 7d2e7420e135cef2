"""`digitlab doctor data`: what is wrong with a dataset itself. Suspect labels over the training and
test files (digitlab.doctor.labels), test digits that (nearly) repeat a training digit, and how the
classes are balanced; a report with contact sheets of the suspects and the near-duplicates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..data.datasets import Dataset, load_dataset, to_float
from ..figures import doctor as pictures
from ..figures.dataset import class_distribution
from ..runs.checkup import Finding, Findings, write_checkup
from .labels import CROSS_VALIDATION, Suspect, label_suspects, require_cleanlab

DUPLICATE_SIMILARITY = 0.99  # cosine similarity of two digits' pixels at or above which they are one digit
SHEET = 40  # suspects on the contact sheet
IMBALANCE = 0.5  # a class with under half the share of the largest is a warning


@dataclass
class DataCheckup:
    """What `examine_data` found: the suspect labels (most suspect first), the test digits that repeat a
    training digit, the class counts per split, and the seconds each part took."""

    dataset: Dataset  # loaded with no validation split: `train` is the training IDX file in its order
    suspects: list[Suspect]
    duplicates: list[dict]
    balance: dict
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "suspects": [suspect.to_dict() for suspect in self.suspects],
            "duplicates": self.duplicates,
            "balance": self.balance,
        }

    def findings(self) -> Findings:
        """The checkup as findings, each with its contact sheet or chart."""
        return Findings([self._labels(), self._duplicates(), self._balance()])

    def _labels(self) -> Finding:
        classes, shown = self.dataset.classes, self.suspects[:SHEET]
        images = torch.stack([self._image(suspect.split, suspect.index) for suspect in shown]) if shown else None
        titles = [f"{s.split} {s.index}\n{classes[s.label]} → {classes[s.suggested]}" for s in shown]
        train = sum(suspect.split == "train" for suspect in self.suspects)
        return Finding(
            "label-errors",
            "warning" if self.suspects else "info",
            f"{len(self.suspects)} suspect labels ({train} in train, {len(self.suspects) - train} in test): "
            "out-of-sample models confidently read these digits as another class",
            {"suspects": len(self.suspects), "train": train, "test": len(self.suspects) - train},
            "look at the contact sheet; relabel or drop the digits you agree are wrong",
            (lambda: pictures.suspects_sheet(images, titles, "Suspect labels (label → suggested)"))
            if images is not None
            else None,
        )

    def _duplicates(self) -> Finding:
        pairs = self.duplicates[:20]
        images = [self._image(split, pair[split]) for pair in pairs for split in ("test", "train")]
        titles = [f"{split} {pair[split]}" for pair in pairs for split in ("test", "train")]
        return Finding(
            "near-duplicates",
            "warning" if self.duplicates else "info",
            f"{len(self.duplicates)} test digits nearly repeat a training digit (pixel cosine similarity ≥ "
            f"{DUPLICATE_SIMILARITY}): look whether they are copies, which the test set would score as seen, "
            "or only alike (plain strokes such as 1s often are)",
            {"pairs": len(self.duplicates), "threshold": DUPLICATE_SIMILARITY},
            "leave copies out of the test score, or out of training" if self.duplicates else "",
            (lambda: pictures.suspects_sheet(torch.stack(images), titles, "Near-duplicates (test, train)"))
            if images
            else None,
        )

    def _balance(self) -> Finding:
        smallest = self.balance["smallest_share"]
        labels = {"train": self.dataset.train.labels, "test": self.dataset.test.labels}
        return Finding(
            "class-balance",
            "warning" if smallest < IMBALANCE else "info",
            f"The rarest training class has {smallest:.0%} as many digits as the commonest",
            self.balance,
            "weight the loss by class, or sample the rare classes more often" if smallest < IMBALANCE else "",
            lambda: class_distribution(labels, self.dataset.classes),
        )

    def _image(self, split: str, index: int) -> torch.Tensor:
        return (self.dataset.train if split == "train" else self.dataset.test).images[index]


def examine_data(
    name: str = "mnist",
    config: TrainConfig = CROSS_VALIDATION,
    folds: int = 4,
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> DataCheckup:
    """Suspect labels (out-of-sample probabilities from `folds`-fold cross-validation of `config`'s model
    over the training and test digits pooled, ranked by cleanlab), near-duplicates and class balance of
    the fetched dataset `name`. Needs cleanlab (the `doctor` extra); never downloads."""
    require_cleanlab()
    data = load_dataset(name, val_size=0, download=False)  # no validation cut: train keeps the IDX order
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    report = lambda fold, took: log(f"fold {fold + 1}/{folds} trained and predicted in {took:.1f} s")  # noqa: E731
    suspects = label_suspects(data, config.replace(dataset=name), folds, seed, report)
    seconds["labels"] = time.perf_counter() - started
    started = time.perf_counter()
    duplicates = near_duplicates(data.train.images, data.test.images)
    seconds["duplicates"] = time.perf_counter() - started
    return DataCheckup(data, suspects, duplicates, class_balance(data), seconds)


def near_duplicates(train: torch.Tensor, test: torch.Tensor, chunk: int = 1000) -> list[dict]:
    """Each test digit whose pixels' cosine similarity with some training digit reaches DUPLICATE_SIMILARITY,
    with that training digit: {"test", "train", "similarity"}, most similar first. Digits are compared
    at full resolution, the search runs at 14×14 and keeps candidates a little below the bar."""
    small_train = _unit(F.avg_pool2d(to_float(train), 2))
    found = []
    for start in range(0, len(test), chunk):
        batch = test[start : start + chunk]
        similarity = _unit(F.avg_pool2d(to_float(batch), 2)) @ small_train.T
        best, where = similarity.max(1)
        for offset in (best >= DUPLICATE_SIMILARITY - 0.02).nonzero().squeeze(1).tolist():
            full = (
                _unit(to_float(batch[offset : offset + 1]))
                @ _unit(to_float(train[where[offset] : where[offset] + 1])).T
            ).item()
            if full >= DUPLICATE_SIMILARITY:
                found.append({"test": start + offset, "train": int(where[offset]), "similarity": full})
    return sorted(found, key=lambda pair: -pair["similarity"])


def _unit(images: torch.Tensor) -> torch.Tensor:
    flat = images.flatten(1)
    return flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-12)


def class_balance(data: Dataset) -> dict:
    """Digits per class in the training and test files, and the rarest training class's share of the commonest's."""
    counts = {
        split: torch.bincount(labels, minlength=len(data.classes)).tolist()
        for split, labels in (("train", data.train.labels), ("test", data.test.labels))
    }
    return {**counts, "smallest_share": min(counts["train"]) / max(counts["train"])}


def write_data_report(checkup: DataCheckup, folder: str | Path) -> Path:
    """The data doctor's page (index.html, contact sheets, findings.json with the suspects) in `folder`."""
    title = f"digitlab doctor: the {checkup.dataset.name} dataset"
    return write_checkup(checkup.findings(), folder, title, checkup.to_dict())
