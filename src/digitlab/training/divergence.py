"""Noticing that training diverged, cheaply: the losses of a window of steps are checked at once.

The rule: training stops when a step's loss is NaN or infinite, or when the mean loss of a window
of CHECK_EVERY steps exceeds BLOWUP_FACTOR × max(the run's first step's loss, ln(classes)). A
fresh model starts near ln(classes) (2.3 for ten digits: the loss of a uniform guess), so the
limit is ~23 there; a model that averages that over 50 steps has left the road. The step named is
the first whose own loss was non-finite or above the limit.

Why a window: the loss of a step lives on the device, and reading it every step would sync the
host with the device every step. Both engines already write each batch's logits into the epoch's
logits buffer, so `LossWatch` recomputes the plain cross-entropy of the whole window from there
(one vectorised pass, one read) when the engine asks for the next batch, and once more at the
end of the epoch: no epoch that diverged ever reaches a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from ..errors import DivergenceError
from .distributed import World

CHECK_EVERY = 50  # steps per window: one host-device sync per window
BLOWUP_FACTOR = 10.0


class LossWatch:
    """Watches the batches of every epoch of one `fit`; raises DivergenceError when the rule above breaks.

    `lr_now()` gives the learning rate of the step just taken (read before the next one sets it).
    Under torchrun the window's loss sums are added over ranks, so every rank stops at the same step.
    """

    def __init__(self, classes: int, lr_now: Callable[[], float], world: World = World(), every: int = CHECK_EVERY):
        self.floor, self.lr_now, self.world, self.every = math.log(classes), lr_now, world, every
        self.limit: float | None = None  # set from the first step's loss

    def watch(self, batches: Iterable, logits: torch.Tensor, epoch: int, steps: int) -> Iterator:
        """Yield `batches` unchanged; `logits` (N, C) is the buffer the engine fills row by row, batch by batch."""
        window = _Window(first_step=1, first_row=0)
        for images, labels in batches:
            if window.sizes:  # the engine asks for the next batch: the previous step is done
                window.lrs.append(self.lr_now())
            if len(window.sizes) == self.every:
                self._check(window, logits, epoch, steps)
                window = window.next()
            window.add(labels)
            yield images, labels
        if window.sizes:
            window.lrs.append(self.lr_now())
            self._check(window, logits, epoch, steps)

    def _check(self, window: _Window, logits: torch.Tensor, epoch: int, steps: int) -> None:
        count, device = len(window.sizes), logits.device
        rows = logits[window.first_row : window.first_row + sum(window.sizes)]
        losses = F.cross_entropy(rows.float(), torch.cat(window.labels), reduction="none")
        sizes = torch.tensor(window.sizes, device=device)
        step_of_row = torch.repeat_interleave(torch.arange(count, device=device), sizes)
        sums = torch.zeros(count, device=device).index_add_(0, step_of_row, losses)
        totals = self.world.sum_(torch.cat([sums, sizes.float()]).double()).tolist()  # the window's one sync
        means = [total / size for total, size in zip(totals[:count], totals[count:], strict=True)]
        for offset, loss in enumerate(means):
            if not math.isfinite(loss):
                raise DivergenceError(epoch, window.first_step + offset, steps, loss, window.lrs[offset])
            if self.limit is None:
                self.limit = BLOWUP_FACTOR * max(loss, self.floor)
        limit = self.limit
        assert limit is not None  # set from the first step just above
        if sum(totals[:count]) / sum(totals[count:]) > limit:
            offset = next(offset for offset, loss in enumerate(means) if loss > limit)
            raise DivergenceError(epoch, window.first_step + offset, steps, means[offset], window.lrs[offset])


class _Window:
    """The steps since the last check: their batch sizes and labels, and each step's learning rate."""

    def __init__(self, first_step: int, first_row: int):
        self.first_step, self.first_row = first_step, first_row
        self.sizes: list[int] = []
        self.labels: list[torch.Tensor] = []
        self.lrs: list[float] = []

    def add(self, labels: torch.Tensor) -> None:
        self.sizes.append(labels.shape[0])
        self.labels.append(labels)

    def next(self) -> _Window:
        return _Window(self.first_step + len(self.sizes), self.first_row + sum(self.sizes))
