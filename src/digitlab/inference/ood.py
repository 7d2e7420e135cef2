"""Is it a digit at all? An out-of-distribution score from Mahalanobis distances (Lee et al. 2018).

Lee et al. ("A simple unified framework for detecting out-of-distribution samples") fit one
Gaussian per class with a shared covariance to a network's activations on training digits; an
input's distance to the nearest class mean says how unlike the digits it is. Here three views
are combined, each measured on MNIST (benchmarks/ood.py):

- pixels: the squared Mahalanobis distance of the picture itself, averaged down to 14x14, to the
  nearest class mean. Clothing, photographs and noise have ink where no digit has it.
- penultimate: the same on the activations the model's last layer reads (`model.penultimate`).
  This catches what the model finds strange: scribbles with digit-like ink.
- energy: minus the log-sum-exp of the logits (Liu et al. 2020), low when some class fits well.

Each view is standardised by its mean and spread on the validation digits, and the score is the
sum of the three; the threshold is the score that accepts `quantile` of the validation digits,
so about 1 - quantile of real digits are rejected by design. The test split is never used.
The detector travels inside the model file (tensors `ood.*`, metadata `ood`), and a model that
has one carries it as `model.ood`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import to_float
from ..errors import ConfigError
from .evaluate import one_thread

METHOD = "mahalanobis-pixels+penultimate+energy"
PREFIX = "ood."
QUANTILE = 0.995  # accept 99.5% of validation digits: at 99% the test digits rejected sat right at 1%
FIT_LIMIT = 10_000  # training images that fit the Gaussians: plenty for a few hundred dimensions
RIDGE = 1e-4  # added to the covariance's diagonal, relative to its mean variance, so it always inverts
Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Observed:
    """What the detector looks at for N images: pixels (N, 196) at 14x14, activations (N, D), logits (N, C)."""

    pixels: torch.Tensor
    activations: torch.Tensor
    logits: torch.Tensor


@dataclass
class Gaussians:
    """Class means (C, D) and one shared precision matrix (D, D), float64."""

    means: torch.Tensor
    precision: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Gaussians:
        features, labels = features.double(), labels.long().cpu()
        means = torch.stack([_class_mean(features, labels, digit) for digit in range(num_classes)])
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features)
        ridge = RIDGE * covariance.diagonal().mean().clamp(min=1e-12)
        precision = torch.linalg.inv(covariance + ridge * torch.eye(len(covariance), dtype=covariance.dtype))
        return cls(means, (precision + precision.T) / 2)

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance (N,) from each row of `features` (N, D) to its nearest class mean."""
        offsets = features.double()[:, None, :] - self.means[None]  # (N, C, D)
        return torch.einsum("ncd,de,nce->nc", offsets, self.precision, offsets).min(1).values


@dataclass
class Detector:
    """The fitted views, their validation mean and spread (3,) each, and the threshold on the summed score."""

    pixels: Gaussians
    penultimate: Gaussians
    centre: torch.Tensor
    spread: torch.Tensor
    threshold: float
    quantile: float = QUANTILE
    method: str = METHOD

    def views(self, seen: Observed) -> torch.Tensor:
        """The three raw views (N, 3): pixel distance, activation distance, energy."""
        energy = -torch.logsumexp(seen.logits.double(), 1)
        return torch.stack([self.pixels.distance(seen.pixels), self.penultimate.distance(seen.activations), energy], 1)

    def score(self, seen: Observed) -> torch.Tensor:
        """The out-of-distribution score (N,): the sum of the standardised views; higher is less digit-like."""
        return ((self.views(seen) - self.centre) / self.spread).sum(1)

    def rejects(self, scores: torch.Tensor) -> torch.Tensor:
        return scores > self.threshold

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {
            "pixel_means": self.pixels.means,
            "pixel_precision": self.pixels.precision,
            "means": self.penultimate.means,
            "precision": self.penultimate.precision,
            "centre": self.centre,
            "spread": self.spread,
        }
        return {PREFIX + name: tensor.contiguous() for name, tensor in named.items()}

    def metadata(self) -> dict:
        return {
            "method": self.method,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "feature_dim": int(self.penultimate.means.shape[1]),
        }

    @classmethod
    def from_file(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> Detector:
        """Rebuild from a model file's `ood.*` tensors and `ood` metadata; ConfigError if they do not agree."""
        try:
            found = {
                name: tensors[PREFIX + name].double()
                for name in ("pixel_means", "pixel_precision", "means", "precision", "centre", "spread")
            }
            dim, threshold = int(metadata["feature_dim"]), float(metadata["threshold"])
            method, quantile = metadata["method"], float(metadata["quantile"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"incomplete out-of-distribution statistics ({error!r})") from None
        shapes = {name: tuple(tensor.shape) for name, tensor in found.items()}
        pixels = found["pixel_means"].shape[-1]
        expected = {"precision": (dim, dim), "pixel_precision": (pixels, pixels), "centre": (3,), "spread": (3,)}
        if (
            method != METHOD
            or shapes["means"][1:] != (dim,)
            or any(shapes[name] != shape for name, shape in expected.items())
        ):
            raise ConfigError(
                f"out-of-distribution statistics do not fit: method {method!r}, feature_dim {dim}, tensors {shapes}"
            )
        return cls(
            Gaussians(found["pixel_means"], found["pixel_precision"]),
            Gaussians(found["means"], found["precision"]),
            found["centre"],
            found["spread"],
            threshold,
            quantile,
            method,
        )


@torch.no_grad()
def observe(
    model: nn.Module, images: torch.Tensor, batch_size: int = 2000, transform: Transform | None = None
) -> Observed:
    """The detector's inputs for uint8 images (N, 1, 28, 28), computed in eval mode and returned on
    the CPU; `transform`, if given, maps each batch of float images first (e.g. deskew)."""
    device = next(model.parameters()).device
    transform = transform or (lambda batch: batch)
    was_training = model.training
    model.eval()
    pixels, activations, logits = [], [], []
    try:
        for start in range(0, images.shape[0], batch_size):
            batch = transform(to_float(images[start : start + batch_size].to(device)))
            chunk = model.penultimate(batch)  # type: ignore[operator]  # every registered model defines it (models.py)
            pixels.append(F.avg_pool2d(batch.float(), 2).flatten(1).cpu())
            activations.append(chunk.float().cpu())
            logits.append(model.head(chunk).float().cpu())  # type: ignore[operator]  # as penultimate
    finally:
        model.train(was_training)
    return Observed(torch.cat(pixels), torch.cat(activations), torch.cat(logits))


def fit_detector(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    num_classes: int,
    quantile: float = QUANTILE,
    transform: Transform | None = None,
    seed: int = 0,
) -> Detector:
    """Fit the Gaussians on (up to FIT_LIMIT of) the training digits; standardise the views and set
    the threshold to the `quantile` of the scores on the validation digits (which it never fitted).
    `transform` maps float batches as the model expects them (see observe)."""
    if not len(val_images):
        raise ConfigError("the out-of-distribution threshold needs validation digits (val_size > 0)")
    if not 0.5 <= quantile < 1.0:
        raise ConfigError(f"the accepted quantile must be in [0.5, 1), got {quantile}")
    if len(train_images) > FIT_LIMIT:
        chosen = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:FIT_LIMIT]
        train_images, train_labels = train_images[chosen], train_labels[chosen]
    with one_thread():
        return _fitted(model, train_images, train_labels, val_images, num_classes, quantile, transform)


def _fitted(model, train_images, train_labels, val_images, num_classes, quantile, transform) -> Detector:
    seen = observe(model, train_images, transform=transform)
    detector = Detector(
        Gaussians.fit(seen.pixels, train_labels, num_classes),
        Gaussians.fit(seen.activations, train_labels, num_classes),
        centre=torch.zeros(3, dtype=torch.float64),
        spread=torch.ones(3, dtype=torch.float64),
        threshold=float("inf"),
        quantile=quantile,
    )
    val_seen = observe(model, val_images, transform=transform)
    views = detector.views(val_seen)
    detector.centre, detector.spread = views.mean(0), views.std(0).clamp(min=1e-12)
    detector.threshold = float(torch.quantile(detector.score(val_seen), quantile))
    return detector


def _class_mean(features: torch.Tensor, labels: torch.Tensor, digit: int) -> torch.Tensor:
    members = features[labels == digit]
    if not len(members):
        raise ConfigError(f"no training images of class {digit} to fit the out-of-distribution statistics")
    return members.mean(0)


class Rejector(Protocol):
    """What predict asks of a detector: a score per picture (higher is less digit-like), the verdict, and
    what the model file stores (this module's Detector, or the learned judge of inference.rejection)."""

    threshold: float
    quantile: float
    method: str

    def score(self, seen: Observed) -> torch.Tensor: ...

    def rejects(self, scores: torch.Tensor) -> torch.Tensor: ...

    def tensors(self) -> dict[str, torch.Tensor]: ...

    def metadata(self) -> dict: ...


def detector_of(model: nn.Module) -> Rejector | None:
    """The detector a model carries (`model.ood`), or None for models saved without one."""
    return model.__dict__.get("ood")


def auroc(inlier_scores: torch.Tensor, outlier_scores: torch.Tensor) -> float:
    """Area under the ROC curve for telling outliers (higher scores) from inliers: the chance that a
    random outlier scores above a random inlier, ties counting half (the Mann-Whitney U statistic)."""
    scores = torch.cat([inlier_scores, outlier_scores]).double()
    ranks = _average_ranks(scores)
    outlier_ranks = ranks[len(inlier_scores) :]
    count_in, count_out = len(inlier_scores), len(outlier_scores)
    if not count_in or not count_out:
        raise ConfigError("AUROC needs both inliers and outliers")
    return float((outlier_ranks.sum() - count_out * (count_out + 1) / 2) / (count_in * count_out))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N of `values`, tied values sharing the mean of their ranks."""
    order = values.argsort()
    ordered = values[order]
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(values)
    ranks[order] = mean_rank[inverse]
    return ranks


def random_strokes(count: int, seed: int = 0, size: int = 28) -> torch.Tensor:
    """`count` uint8 images (N, 1, size, size) of random polylines: 2-5 vertices anywhere in the
    middle of the frame, a pen 1.5-3 px wide, anti-aliased. Scribbles, not digits (though a
    straight stroke can pass for a 1, which is why these are measured and not a goal)."""
    generator = torch.Generator().manual_seed(seed)
    vertices = 4 + torch.rand(count, 5, 2, generator=generator) * (size - 8)  # (N, 5, 2) in pixels
    used = torch.randint(2, 6, (count, 1), generator=generator)  # vertices per polyline
    width = 1.5 + 1.5 * torch.rand(count, 1, generator=generator)
    axis = torch.arange(size, dtype=torch.float32) + 0.5
    pixels = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(1, 1, -1, 2)  # (1, 1, P, 2)
    start, end = vertices[:, :-1, None], vertices[:, 1:, None]  # (N, 4, 1, 2)
    along = end - start
    t = (((pixels - start) * along).sum(-1) / (along * along).sum(-1).clamp(min=1e-6)).clamp(0, 1)
    distance = (pixels - (start + t[..., None] * along)).norm(dim=-1)  # (N, 4, P)
    drawn = torch.arange(4)[None, :] < (used - 1)  # segments that exist
    distance = torch.where(drawn[..., None], distance, torch.full_like(distance, 1e3)).min(1).values
    ink = (width / 2 + 0.5 - distance).clamp(0, 1)
    return (ink * 255).round().to(torch.uint8).reshape(count, 1, size, size)


def blank_noise(count: int, seed: int = 0, size: int = 28) -> torch.Tensor:
    """`count` uint8 images (N, 1, size, size) that are nearly empty: faint uniform noise (up to
    10-40% grey) with a few bright specks, like a blank page photographed in poor light."""
    generator = torch.Generator().manual_seed(seed)
    level = 0.1 + 0.3 * torch.rand(count, 1, 1, 1, generator=generator)
    noise = torch.rand(count, 1, size, size, generator=generator) * level
    specks = torch.rand(count, 1, size, size, generator=generator) < 0.01
    return (noise.masked_fill(specks, 1.0) * 255).round().to(torch.uint8)
