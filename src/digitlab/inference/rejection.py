"""Saying "not a digit" from what `predict` sees: a small learned judge on top of the Mahalanobis views.

The Mahalanobis detector (ood.Detector) is fitted on MNIST's own tensors and only knows what digits
look like. The pictures `predict` hands the model are different: every photo of a letter, a doodle
or a shirt has been cropped, fitted into 20 px and its strokes redrawn, and much of it then looks
digit-like enough. So the judge here is taught on exactly those pictures (outlier exposure, Hendrycks
et al. 2019): digits rendered the real-world suite's ways from MNIST's *training* split and read by
the preprocessing, against the non-digit suite's training part read the same way
(`inference.nondigits`). Its input is what the model computes for a picture (the three standardised
Mahalanobis views, the penultimate activations, the logits) and the picture at 14×14; its output one
logit, "not a digit". The threshold is the `quantile` of the scores of digits rendered from the
*validation* split, so the share of real digits refused is set by design; the test split is never
looked at.

It travels in the model file with the base detector: tensors `ood.*` and `ood.judge.*`, metadata
`ood` with method `learned-judge` and the base detector's own metadata under `base`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import AugmentConfig, augment_batch
from ..errors import ConfigError
from .evaluate import one_thread
from .ood import PREFIX, QUANTILE, Detector, Observed, observe

METHOD = "learned-judge"
JUDGE = PREFIX + "judge."
HIDDEN = 128  # units of the judge's one hidden layer
EPOCHS = 40  # passes over the judge's training pictures (a few seconds: they are feature vectors)
BATCH = 256


class Judge(nn.Module):
    """One hidden layer over the standardised features; its logit says "not a digit"."""

    def __init__(self, width: int, hidden: int = HIDDEN):
        super().__init__()
        self.hidden = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(features)))[:, 0]


@dataclass
class LearnedDetector:
    """The base Mahalanobis detector, the judge's feature standardisation (F,), the judge, and the threshold."""

    base: Detector
    centre: torch.Tensor
    spread: torch.Tensor
    judge: Judge
    threshold: float
    quantile: float = QUANTILE
    method: str = METHOD

    def features(self, seen: Observed) -> torch.Tensor:
        """(N, F) float32, standardised: base views (3), activations (D), logits (C), pixels at 14×14 (196)."""
        return (_raw_features(self.base, seen) - self.centre) / self.spread

    def score(self, seen: Observed) -> torch.Tensor:
        """The judge's logit (N,) that a picture is not a digit; higher is less digit-like."""
        with torch.no_grad():
            return self.judge.eval()(self.features(seen)).double()

    def rejects(self, scores: torch.Tensor) -> torch.Tensor:
        return scores > self.threshold

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"centre": self.centre, "spread": self.spread, **self.judge.state_dict()}
        return {**self.base.tensors(), **{JUDGE + name: tensor.contiguous() for name, tensor in named.items()}}

    def metadata(self) -> dict:
        return {
            "method": self.method,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "hidden": self.judge.hidden.out_features,
            "base": self.base.metadata(),
        }

    @classmethod
    def from_file(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> LearnedDetector:
        """Rebuild from a model file's tensors and `ood` metadata; ConfigError if they do not agree."""
        weights = {
            name.removeprefix(JUDGE): tensors.pop(name).float() for name in list(tensors) if name.startswith(JUDGE)
        }
        try:
            base = Detector.from_file(tensors, metadata["base"])
            threshold, quantile = float(metadata["threshold"]), float(metadata["quantile"])
            hidden = int(metadata["hidden"])
            centre, spread = weights.pop("centre"), weights.pop("spread")
            judge = Judge(len(centre), hidden)
            judge.load_state_dict(weights)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ConfigError(f"the not-a-digit judge does not fit its file ({str(error).splitlines()[0]})") from None
        return cls(base, centre, spread, judge, threshold, quantile)


def detector_from_file(tensors: dict[str, torch.Tensor], metadata: dict) -> Detector | LearnedDetector:
    """Whichever detector a model file's `ood` metadata describes."""
    if metadata.get("method") == METHOD:
        return LearnedDetector.from_file(tensors, metadata)
    return Detector.from_file(tensors, metadata)


def fit_learned_detector(
    model: nn.Module,
    base: Detector,
    digits: torch.Tensor,
    nondigits: torch.Tensor,
    val_digits: torch.Tensor,
    quantile: float = QUANTILE,
    seed: int = 0,
    augmentation: AugmentConfig | None = None,
) -> LearnedDetector:
    """Teach the judge to tell `digits` from `nondigits` (uint8 (N, 1, 28, 28) pictures as predict prepares
    them) on top of `base`, with its threshold at the `quantile` of the scores of `val_digits`; `augmentation`:
    how the training pictures are varied in every pass (None: not at all)."""
    if not len(val_digits) or not len(digits) or not len(nondigits):
        raise ConfigError("the not-a-digit judge needs digits, non-digits and validation digits")
    if not 0.5 <= quantile < 1.0:
        raise ConfigError(f"the accepted quantile must be in [0.5, 1), got {quantile}")
    with one_thread():
        images = torch.cat([digits, nondigits])
        targets = torch.cat([torch.zeros(len(digits)), torch.ones(len(nondigits))])
        seen = observe(model, images)
        raw = _raw_features(base, seen)
        torch.manual_seed(seed)  # the judge's first weights
        detector = LearnedDetector(
            base, raw.mean(0), raw.std(0).clamp(min=1e-6), Judge(raw.shape[1]), float("inf"), quantile
        )
        _train_judge(detector, model, images, seen, targets, augmentation, seed)
        detector.threshold = float(torch.quantile(detector.score(observe(model, val_digits)), quantile))
    return detector


def _raw_features(base: Detector, seen: Observed) -> torch.Tensor:
    """The judge's input before standardisation (N, F): base views standardised as the base does (3),
    activations (D), logits (C), pixels at 14×14 (196)."""
    views = ((base.views(seen) - base.centre) / base.spread).float()
    return torch.cat([views, seen.activations, seen.logits, seen.pixels], 1)


def _train_judge(
    detector: LearnedDetector,
    model: nn.Module,
    images: torch.Tensor,
    seen: Observed,
    targets: torch.Tensor,
    augmentation: AugmentConfig | None,
    seed: int,
) -> None:
    """Train the detector's judge with class-balanced binary cross-entropy and AdamW on `images` (uint8
    (N, 1, 28, 28), `seen` by the model already) and their `targets` (1: not a digit). With `augmentation`,
    every batch is augmented and seen by the model afresh, so the judge learns from more shapes than the
    pictures hold; without it (or with one that changes nothing) the features are computed once. One seed
    makes the same judge."""
    generator = torch.Generator().manual_seed(seed)
    features_of: Callable[[torch.Tensor], torch.Tensor]
    if augmentation is None or not augmentation.active:
        features_of = detector.features(seen).__getitem__  # rows -> their features, computed once
    else:
        features_of = _varied_features(detector, model, images, augmentation, generator)
    optimizer = torch.optim.AdamW(detector.judge.parameters(), lr=1e-3, weight_decay=1e-4)
    balance = (1 - targets.mean()) / targets.mean()  # weight of a non-digit, so both classes count alike
    detector.judge.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(targets), generator=generator).split(BATCH):
            logits = detector.judge(features_of(batch))
            loss = F.binary_cross_entropy_with_logits(logits, targets[batch], pos_weight=balance)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    detector.judge.eval()


def _varied_features(
    detector: LearnedDetector, model: nn.Module, images: torch.Tensor, augmentation: AugmentConfig, generator
) -> Callable[[torch.Tensor], torch.Tensor]:
    """rows -> the judge's features of those `images`, varied by `augmentation` and seen by the model afresh."""

    def vary(pixels: torch.Tensor) -> torch.Tensor:
        return augment_batch(pixels, augmentation, generator)

    return lambda rows: detector.features(observe(model, images[rows], transform=vary))
