"""Noticing that training diverged, cheaply: the losses of a window of steps are checked at once.

The rule: training stops when a step's loss is NaN or infinite, or when the mean loss of a window
of CHECK_EVERY steps exceeds BLOWUP_FACTOR × max(the run's first step's loss, ln(classes)). A
fresh model starts near ln(classes) (2.3 for ten digits: the loss of a uniform guess), so the
limit is ~23 there; a model that averages that over 50 steps has left the road. The step named is
the first whose own loss was non-finite or above the limit.

Why a window: the loss of a step lives on the device, and reading it every step would sync the
host with the device every step. Both engines already write each batch's logits for the epoch's
scores, so `fit` hands the watch those rows after every step and `LossWatch` recomputes the plain
cross-entropy of the whole window from them (one vectorised pass, one read) every CHECK_EVERY
steps, and once more at the end of the epoch: no epoch that diverged ever reaches a checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DivergenceError
from .distributed import World

CHECK_EVERY = 50  # steps per window: one host-device sync per window
BLOWUP_FACTOR = 10.0


class LossWatch:
    """Watches every step of one `fit`; raises DivergenceError when the rule above breaks.

    `steps` is the number of steps in an epoch (for the message). Under torchrun the window's loss
    sums are added over ranks, so every rank stops at the same step.
    """

    def __init__(self, classes: int, steps: int, world: World = World(), every: int = CHECK_EVERY):
        self.floor, self.steps, self.world, self.every = math.log(classes), steps, world, every
        self.limit: float | None = None  # set from the first step's loss
        self.window = _Window()

    def see(self, epoch: int, step: int, logits: torch.Tensor, labels: torch.Tensor, lr: float) -> None:
        """After step `step` (1-based) of `epoch`: its logits (B, C), labels (B,) and learning rate."""
        self.window.add(step, logits, labels, lr)
        if len(self.window.sizes) == self.every:
            self._check(epoch)

    def end_of_epoch(self, epoch: int) -> None:
        """Check the steps since the last check, so that no epoch that diverged reaches a checkpoint."""
        if self.window.sizes:
            self._check(epoch)

    def _check(self, epoch: int) -> None:
        window, self.window = self.window, _Window()
        count, device = len(window.sizes), window.logits[0].device
        losses = F.cross_entropy(torch.cat(window.logits).float(), torch.cat(window.labels), reduction="none")
        sizes = torch.tensor(window.sizes, device=device)
        step_of_row = torch.repeat_interleave(torch.arange(count, device=device), sizes)
        sums = torch.zeros(count, device=device).index_add_(0, step_of_row, losses)
        totals = self.world.sum_(torch.cat([sums, sizes.float()]).double()).tolist()  # the window's one sync
        means = [total / size for total, size in zip(totals[:count], totals[count:], strict=True)]
        for offset, loss in enumerate(means):
            if not math.isfinite(loss):
                raise DivergenceError(epoch, window.steps[offset], self.steps, loss, window.lrs[offset])
            if self.limit is None:
                self.limit = BLOWUP_FACTOR * max(loss, self.floor)
        limit = self.limit
        assert limit is not None  # set from the first step just above
        if sum(totals[:count]) / sum(totals[count:]) > limit:
            offset = next(offset for offset, loss in enumerate(means) if loss > limit)
            raise DivergenceError(epoch, window.steps[offset], self.steps, means[offset], window.lrs[offset])


class _Window:
    """The steps since the last check: their numbers, logits, labels and batch sizes, and each one's learning rate."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.lrs: list[float] = []

    def add(self, step: int, logits: torch.Tensor, labels: torch.Tensor, lr: float) -> None:
        self.steps.append(step)
        self.logits.append(logits)
        self.labels.append(labels)
        self.sizes.append(labels.shape[0])
        self.lrs.append(lr)
