"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"):
train a fresh model for a few hundred steps while the rate grows exponentially from tiny to huge,
and read off where the loss falls fastest and where it stops falling.

The steps are the run's own: the configured model, optimizer, batch size, engine and augmentation,
through the same step `fit` takes; only the rate is set before every step. The loss of each
step is read from the logits the engine writes (as the divergence watch does) and smoothed with a
bias-corrected moving average; the test stops once the smoothed loss is STOP_FACTOR times its lowest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import TrainConfig, resolve_device
from ..data.augment import augment_batch
from ..data.datasets import BatchLoader, Dataset, load_dataset, to_float
from ..figures import doctor as pictures
from ..training.steps import Trainee, choose_engine, step_function
from ..training.train import build

STOP_FACTOR = 4.0  # stop once the smoothed loss is 4× its lowest: the rate has blown training up
SMOOTHING = 0.9  # weight of the past in the moving average of the loss


@dataclass
class RateRange:
    """What the range test found: the rate of the steepest fall, the rate at the lowest loss, the good
    range (`low`, `high`: where the loss falls) and the rate suggested for training at a constant rate
    (a tenth of the rate at the lowest loss), with the curve (rates and smoothed losses) behind it."""

    steepest: float
    lowest: float
    low: float
    high: float
    suggested: float
    rates: list[float]
    losses: list[float]

    def to_dict(self) -> dict:
        return {
            "suggested": self.suggested,
            "range": [self.low, self.high],
            "steepest": self.steepest,
            "lowest_loss_at": self.lowest,
            "curve": {"lr": self.rates, "loss": self.losses},
        }

    def figure(self):
        return pictures.lr_range(self.rates, self.losses, self.low, self.high, self.suggested)

    def _repr_png_(self):
        return self.figure()._repr_png_()


def lr_find(
    config: TrainConfig | None = None,
    dataset: Dataset | None = None,
    steps: int = 200,
    start: float = 1e-6,
    end: float = 1.0,
) -> RateRange:
    """Run the range test for `config` (its model, optimizer, batch size, engine, augmentation) on its
    dataset's training split over `steps` steps from rate `start` to `end`; return the RateRange."""
    config = config or TrainConfig()
    if dataset is None:
        dataset = load_dataset(config.dataset, val_size=config.val_size, split_seed=config.split_seed, download=False)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    model, optimizer = build(config, device)
    step = step_function(Trainee(model, optimizer, choose_engine(config, model, optimizer)), config)
    rates = [start * (end / start) ** (number / max(steps - 1, 1)) for number in range(steps)]
    loader = BatchLoader(
        dataset.train.to(device), config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(config.seed)
    )
    augmentation = config.augmentation()
    logits = torch.empty(steps * config.batch_size, len(dataset.classes), device=device)
    curve = _Curve(rates)
    model.train()
    flushing = torch.set_flush_denormal(True)  # as fit does: tiny Adam moments are slow as denormals
    try:
        for rate, (images, labels) in zip(rates, _endless(loader), strict=False):
            for group in optimizer.param_groups:
                group["lr"] = rate
            if augmentation.active:
                images = augment_batch(to_float(images), augmentation, loader.generator)
            rows = logits[curve.row : curve.row + labels.shape[0]]
            step(images, labels, rows)
            if curve.record(rows, labels):
                break
    finally:
        if flushing:
            torch.set_flush_denormal(False)
    return _read(curve)


def _endless(loader: BatchLoader):
    while True:
        yield from loader


class _Curve:
    """The smoothed loss of every step so far, read from the logits the step wrote."""

    def __init__(self, rates: list[float]):
        self.rates = rates
        self.row, self.average = 0, 0.0
        self.losses: list[float] = []

    def record(self, logits: torch.Tensor, labels: torch.Tensor) -> bool:
        """Add the step of `logits` (B, C) and `labels` (B,); True once the loss has blown up."""
        loss = F.cross_entropy(logits.float(), labels).item()
        self.row += labels.shape[0]
        self.average = SMOOTHING * self.average + (1 - SMOOTHING) * loss
        corrected = self.average / (1 - SMOOTHING ** (len(self.losses) + 1))  # the average's bias towards 0
        self.losses.append(corrected if math.isfinite(loss) else math.inf)
        return not math.isfinite(self.losses[-1]) or self.losses[-1] > STOP_FACTOR * min(self.losses)


def _read(curve: _Curve) -> RateRange:
    """Smith's range: from where the loss starts to fall (a tenth of the way from its start to its
    lowest) to a third of the rate at the lowest loss (a margin before it blows up); the steepest
    fall per decade of rate between them; a tenth of the rate at the lowest loss to train at."""
    losses = curve.losses
    rates = curve.rates[: len(losses)]
    lowest = min((index for index, loss in enumerate(losses) if math.isfinite(loss)), key=losses.__getitem__)
    falling = losses[0] - 0.1 * (losses[0] - losses[lowest])
    first = next(index for index, loss in enumerate(losses) if loss <= falling)
    # slope per decade over a window of a twentieth of the steps, so that noise does not win
    window = max(2, len(rates) // 20)
    slopes = {
        index + window // 2: (losses[index + window] - losses[index]) / math.log10(rates[index + window] / rates[index])
        for index in range(first, lowest - window)
    }
    steepest = min(slopes, key=slopes.__getitem__) if slopes else first
    return RateRange(rates[steepest], rates[lowest], rates[first], rates[lowest] / 3, rates[lowest] / 10, rates, losses)
