"""One training pass, per engine: the hand-fused MLP step or autograd with its `Objective`, and the
learning rate set before every step. `fit` (digitlab.train) runs one pass per epoch.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import TrainConfig
from ..data.augment import AugmentConfig, augment_batch
from ..data.datasets import to_float
from ..errors import ConfigError
from ..models.nets import MLP, in_preferred_layout
from . import fastmlp
from .distributed import World
from .recipes import learning_rate


def choose_engine(config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """'fused' when the hand-fused MLP step applies (and engine is auto or fused), else 'autograd'."""
    fusable = fastmlp.supports(model, optimizer) and config.teacher is None
    if config.engine == "fused" and not fusable:
        raise ConfigError("engine 'fused' needs an MLP without dropout or teacher, trained with adam or adamw")
    return "fused" if fusable and config.engine != "autograd" else "autograd"


@dataclasses.dataclass
class Trainee:
    """What `fit` trains: the model and its optimizer, the engine that steps them ('fused' or
    'autograd', see choose_engine), the teacher it distils from (or None), the torchrun world
    whose ranks share each batch, and the dtype forward and loss autocast to (None: fp32; see
    config.resolve_precision)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    engine: str = "autograd"
    teacher: nn.Module | None = None
    world: World = World()
    autocast: torch.dtype | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
    """Cross-entropy (optionally label-smoothed), blended with distillation from a teacher when one is given.

    Distillation (Hinton et al. 2015): KL divergence between the temperature-softened outputs of
    teacher and student, scaled by T^2 so its gradients keep their size as T changes.
    """

    label_smoothing: float = 0.0
    teacher: nn.Module | None = None
    temperature: float = 4.0
    weight: float = 0.5

    def __call__(self, logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if self.teacher is None:
            return loss
        with torch.no_grad():
            soft_targets = F.softmax(self.teacher(in_preferred_layout(self.teacher, inputs)) / self.temperature, 1)
        distill = F.kl_div(F.log_softmax(logits / self.temperature, 1), soft_targets, reduction="batchmean")
        return (1 - self.weight) * loss + self.weight * self.temperature**2 * distill


def autograd_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches,
    logits_out: torch.Tensor,
    on_step=None,
    objective: Objective = Objective(),
    autocast: torch.dtype | None = None,
) -> int:
    """One pass with autograd over `batches`; logits go to successive rows of `logits_out`. Returns rows filled.

    With `autocast` (torch.bfloat16), forward and loss run under autocast to it; weights, gradients
    and the optimizer stay fp32.
    """
    filled = 0
    device_type = logits_out.device.type
    for images, labels in batches:
        if on_step is not None:
            on_step()
        inputs = in_preferred_layout(model, to_float(images) if images.dtype == torch.uint8 else images)
        with torch.autocast(device_type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            logits = model(inputs)
            loss = objective(logits, inputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        logits_out[filled : filled + labels.shape[0]] = logits.detach()
        filled += labels.shape[0]
    return filled


def augmented(batches, augmentation: AugmentConfig, generator: torch.Generator):
    """Batches with random transforms applied on their device (parameters drawn from `generator`)."""
    for images, labels in batches:
        yield augment_batch(to_float(images), augmentation, generator), labels


class Schedule:
    """Sets the learning rate before every step, from the global step count (so resuming needs no state)."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int, done_epochs: int):
        self.optimizer, self.config = optimizer, config
        self.total = config.epochs * steps_per_epoch
        self.step = done_epochs * steps_per_epoch
        self.on_step = None if config.schedule == "constant" and not config.warmup else self._advance

    def _advance(self) -> None:
        rate = learning_rate(self.step, self.total, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.step += 1


def epoch_runner(trainee: Trainee, config: TrainConfig):
    """A function (batches, logits_out, on_step) -> rows filled, for the trainee's engine."""
    model, optimizer, world = trainee.model, trainee.optimizer, trainee.world
    if trainee.engine == "fused":
        reducer = world.average_ if world.distributed else None
        trainer = fastmlp.FusedMLPTrainer(cast(MLP, model), optimizer, reducer, label_smoothing=config.label_smoothing)
        return trainer.train_epoch
    network = DistributedDataParallel(model) if world.distributed else model
    objective = Objective(config.label_smoothing, trainee.teacher, config.distill_temperature, config.distill_weight)
    return lambda batches, logits, on_step: autograd_epoch(
        network, optimizer, batches, logits, on_step, objective, trainee.autocast
    )
