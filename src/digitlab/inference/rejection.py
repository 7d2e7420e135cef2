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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .ood import PREFIX, QUANTILE, Detector, Observed, _one_thread, observe

METHOD = "learned-judge"
JUDGE = PREFIX + "judge."
HIDDEN = 128  # units of the judge's one hidden layer
EPOCHS = 40  # passes over the judge's training pictures (a few seconds: they are feature vectors)
BATCH = 256


@dataclass
class LearnedDetector:
    """The base Mahalanobis detector, the judge's feature standardisation (F,) and weights, and the threshold."""

    base: Detector
    centre: torch.Tensor
    spread: torch.Tensor
    weights: dict[str, torch.Tensor]  # hidden.weight (H, F), hidden.bias (H,), out.weight (1, H), out.bias (1,)
    threshold: float
    quantile: float = QUANTILE
    method: str = METHOD

    def features(self, seen: Observed) -> torch.Tensor:
        """(N, F) float32, standardised: base views (3), activations (D), logits (C), pixels at 14×14 (196)."""
        return (_raw_features(self.base, seen) - self.centre) / self.spread

    def score(self, seen: Observed) -> torch.Tensor:
        """The judge's logit (N,) that a picture is not a digit; higher is less digit-like."""
        return _judge(self.features(seen), self.weights).double()

    def rejects(self, scores: torch.Tensor) -> torch.Tensor:
        return scores > self.threshold

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"centre": self.centre, "spread": self.spread, **self.weights}
        return {**self.base.tensors(), **{JUDGE + name: tensor.contiguous() for name, tensor in named.items()}}

    def metadata(self) -> dict:
        return {
            "method": self.method,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "hidden": int(self.weights["hidden.bias"].shape[0]),
            "base": self.base.metadata(),
        }

    @classmethod
    def from_file(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> LearnedDetector:
        """Rebuild from a model file's tensors and `ood` metadata; ConfigError if they do not agree."""
        judge = {
            name.removeprefix(JUDGE): tensors.pop(name).float() for name in list(tensors) if name.startswith(JUDGE)
        }
        try:
            base = Detector.from_file(tensors, metadata["base"])
            threshold, quantile = float(metadata["threshold"]), float(metadata["quantile"])
            centre, spread = judge.pop("centre"), judge.pop("spread")
            shapes = {
                name: tuple(judge[name].shape) for name in ("hidden.weight", "hidden.bias", "out.weight", "out.bias")
            }
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"incomplete not-a-digit judge ({error!r})") from None
        hidden, width = shapes["hidden.weight"]
        if shapes != {
            "hidden.weight": (hidden, width),
            "hidden.bias": (hidden,),
            "out.weight": (1, hidden),
            "out.bias": (1,),
        } or centre.shape != (width,):
            raise ConfigError(f"the not-a-digit judge does not fit: {shapes}, centre {tuple(centre.shape)}")
        return cls(base, centre, spread, judge, threshold, quantile)


def detector_from_file(tensors: dict[str, torch.Tensor], metadata: dict) -> Detector | LearnedDetector:
    """Whichever detector a model file's `ood` metadata describes."""
    if metadata.get("method") == METHOD:
        return LearnedDetector.from_file(tensors, metadata)
    return Detector.from_file(tensors, metadata)


def _judge(features: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = F.relu(F.linear(features, weights["hidden.weight"], weights["hidden.bias"]))
    return F.linear(hidden, weights["out.weight"], weights["out.bias"])[:, 0]


def fit_learned_detector(
    model: nn.Module,
    base: Detector,
    digits: torch.Tensor,
    nondigits: torch.Tensor,
    val_digits: torch.Tensor,
    quantile: float = QUANTILE,
    seed: int = 0,
) -> LearnedDetector:
    """Teach the judge to tell `digits` from `nondigits` (uint8 (N, 1, 28, 28) pictures as predict prepares
    them) on top of `base`, with its threshold at the `quantile` of the scores of `val_digits`."""
    if not len(val_digits) or not len(digits) or not len(nondigits):
        raise ConfigError("the not-a-digit judge needs digits, non-digits and validation digits")
    if not 0.5 <= quantile < 1.0:
        raise ConfigError(f"the accepted quantile must be in [0.5, 1), got {quantile}")
    with _one_thread():
        detector = LearnedDetector(base, torch.zeros(1), torch.ones(1), {}, float("inf"), quantile)
        raw = torch.cat([_raw_features(base, observe(model, images)) for images in (digits, nondigits)])
        targets = torch.cat([torch.zeros(len(digits)), torch.ones(len(nondigits))])
        detector.centre, detector.spread = raw.mean(0), raw.std(0).clamp(min=1e-6)
        detector.weights = _train_judge((raw - detector.centre) / detector.spread, targets, seed)
        detector.threshold = float(torch.quantile(detector.score(observe(model, val_digits)), quantile))
    return detector


def _raw_features(base: Detector, seen: Observed) -> torch.Tensor:
    """The judge's input before standardisation (N, F): base views standardised as the base does (3),
    activations (D), logits (C), pixels at 14×14 (196)."""
    views = ((base.views(seen) - base.centre) / base.spread).float()
    return torch.cat([views, seen.activations, seen.logits, seen.pixels], 1)


def _train_judge(features: torch.Tensor, targets: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """A one-hidden-layer net trained with class-balanced binary cross-entropy and Adam."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    judge = nn.Sequential(nn.Linear(features.shape[1], HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))
    optimizer = torch.optim.AdamW(judge.parameters(), lr=1e-3, weight_decay=1e-4)
    balance = (1 - targets.mean()) / targets.mean()  # weight of a non-digit, so both classes count alike
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(targets), generator=generator).split(BATCH):
            logits = judge(features[batch])[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, targets[batch], pos_weight=balance)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    state = judge.state_dict()
    return {
        "hidden.weight": state["0.weight"].detach().clone(),
        "hidden.bias": state["0.bias"].detach().clone(),
        "out.weight": state["2.weight"].detach().clone(),
        "out.bias": state["2.bias"].detach().clone(),
    }
