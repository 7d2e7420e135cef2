"""Suspect labels, found by confident learning (Northcutt et al. 2021) on out-of-sample probabilities.

Every digit of the training and test files gets the probabilities of a model that never saw it:
the digits are pooled, cut into `folds` stratified folds, and a model is trained on all folds but
one and predicts the one left out. cleanlab then estimates how many labels are wrong and names that
many, those whose own class gets the lowest probability, most suspect first. Nothing is known in advance: no list of known errors, no index.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrainConfig, resolve_device, resolve_precision
from ..data.datasets import Dataset, Split
from ..errors import ConfigError
from ..inference.evaluate import predict_logits
from ..training.steps import Trainee, choose_engine
from ..training.train import Tracking, build, fit

INSTALL = "pip install 'digitlab[doctor]'"
# The fastest good model on a CPU (benchmarks/records.py: 99.3% in seconds), without label
# smoothing: the probabilities are read as the model's beliefs.
CROSS_VALIDATION = TrainConfig(
    model="cnn-cpu",
    model_kwargs={"stride": 2},
    optimizer="adamw",
    schedule="onecycle",
    warmup=0.25,
    betas=[0.7, 0.9],
    batch_size=256,
    lr=1e-2,
    epochs=2,
    precision="bf16",
    val_size=0,
)


@dataclass(frozen=True)
class Suspect:
    """A digit whose label the models contradict: its split ("train" or "test"), its position in that
    split's IDX file, its label, the class the models suggest, and how suspect it is (0 to 1)."""

    split: str
    index: int
    label: int
    suggested: int
    score: float

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "index": self.index,
            "label": self.label,
            "suggested": self.suggested,
            "score": self.score,
        }


def require_cleanlab():
    """The cleanlab package, or a ConfigError naming the command that installs it."""
    try:
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        raise ConfigError(f"finding label errors needs cleanlab: {INSTALL}") from None
    return cleanlab


def out_of_sample_probabilities(
    pool: Split,
    classes: int,
    config: TrainConfig = CROSS_VALIDATION,
    folds: int = 4,
    seed: int = 0,
    on_fold: Callable[[int, float], None] | None = None,
) -> torch.Tensor:
    """Probabilities (N, classes) for every digit of `pool`, each from the model of the fold it was left
    out of; `on_fold(fold, seconds)` is called after each fold."""
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {folds}")
    device = resolve_device(config.device)
    fold_of = stratified_folds(pool.labels, folds, seed)
    probabilities = torch.zeros(len(pool), classes)
    empty = Split(pool.images[:0], pool.labels[:0])
    for fold in range(folds):
        started = time.perf_counter()
        held_out = fold_of == fold
        training = Split(pool.images[~held_out], pool.labels[~held_out])
        data = Dataset("pool", tuple(str(k) for k in range(classes)), training, empty, empty)
        fold_config = config.replace(seed=config.seed + fold)
        model, optimizer = build(fold_config, device)
        engine = choose_engine(fold_config, model, optimizer)
        autocast = resolve_precision(fold_config.precision, device)[0] if engine == "autograd" else None
        fit(Trainee(model, optimizer, engine, autocast=autocast), data, fold_config, None, Tracking())
        probabilities[held_out] = predict_logits(model, pool.images[held_out]).softmax(1)
        if on_fold is not None:
            on_fold(fold, time.perf_counter() - started)
    return probabilities


def stratified_folds(labels: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """The fold (0..folds-1) of every example: each class dealt round-robin over the folds in a seeded order."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    fold_of = torch.empty(len(labels), dtype=torch.long)
    for cls in labels.unique().tolist():
        members = order[labels[order] == cls]
        fold_of[members] = torch.arange(len(members)) % folds
    return fold_of


def rank_suspects(labels: torch.Tensor, probabilities: torch.Tensor) -> tuple[list[int], np.ndarray]:
    """cleanlab's label issues, most suspect first, and every digit's label quality (self-confidence: the
    probability the out-of-sample model gives its own label). Confident learning estimates how many
    labels are wrong; the issues are that many digits of lowest self-confidence. (Its default,
    pruning by noise rate, picks them per pair of classes by margin: on MNIST with 200 labels flipped
    on purpose it found 182 of them among 239 suspects, the lowest self-confidence 193 among 218;
    benchmarks/label_errors.py measures it.)"""
    cleanlab = require_cleanlab()
    given, probs = labels.numpy(), probabilities.double().numpy()
    issues = cleanlab.filter.find_label_issues(
        given, probs, filter_by="low_self_confidence", return_indices_ranked_by="self_confidence"
    )
    quality = cleanlab.rank.get_label_quality_scores(given, probs, method="self_confidence")
    return [int(index) for index in issues], quality


def label_suspects(
    data: Dataset,
    config: TrainConfig = CROSS_VALIDATION,
    folds: int = 4,
    seed: int = 0,
    on_fold: Callable[[int, float], None] | None = None,
) -> list[Suspect]:
    """The suspect labels of `data`'s training and test digits pooled, most suspect first; `data` is
    loaded without a validation split (val_size=0), so a training digit's index is its IDX position."""
    if len(data.val):
        raise ConfigError("label suspects need the dataset without a validation cut (load it with val_size=0)")
    pool = Split(torch.cat([data.train.images, data.test.images]), torch.cat([data.train.labels, data.test.labels]))
    probabilities = out_of_sample_probabilities(pool, len(data.classes), config, folds, seed, on_fold)
    issues, quality = rank_suspects(pool.labels, probabilities)
    suggested, count = probabilities.argmax(1), len(data.train)
    return [
        Suspect(
            "train" if index < count else "test",
            index if index < count else index - count,
            int(pool.labels[index]),
            int(suggested[index]),
            float(1 - quality[index]),
        )
        for index in issues
    ]
