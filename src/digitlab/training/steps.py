"""The engines that take one optimizer step on a batch: autograd with its `Objective`, or the hand-fused
MLP step (training.fastmlp). `fit` (training.train) calls the trainee's Step once per batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import TrainConfig
from ..data.datasets import to_float
from ..errors import ConfigError
from ..models.nets import MLP, in_preferred_layout
from . import fastmlp
from .distributed import World


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


Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
"""One optimizer step on a batch: step(images (B, 1, 28, 28) uint8 or float, labels (B,), logits_out (B, C)),
writing the batch's logits (before the update) into `logits_out` for the epoch's scores and the divergence watch."""


@dataclasses.dataclass
class AutogradStep:
    """The general engine: forward, loss, backward and the optimizer's step, for any model and optimizer.

    With `autocast` (torch.bfloat16), forward and loss run under autocast to it; weights, gradients
    and the optimizer stay fp32. `network` is the model, or its DistributedDataParallel wrapper.
    """

    network: nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective = Objective()
    autocast: torch.dtype | None = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, logits_out: torch.Tensor) -> None:
        inputs = in_preferred_layout(self.network, to_float(images) if images.dtype == torch.uint8 else images)
        cast_to = self.autocast or torch.bfloat16
        with torch.autocast(logits_out.device.type, dtype=cast_to, enabled=self.autocast is not None):
            logits = self.network(inputs)  # (B, C)
            loss = self.objective(logits, inputs, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        logits_out.copy_(logits.detach())


def step_function(trainee: Trainee, config: TrainConfig) -> Step:
    """The trainee's engine as a Step: the hand-fused MLP step (training.fastmlp) or an AutogradStep."""
    model, optimizer, world = trainee.model, trainee.optimizer, trainee.world
    if trainee.engine == "fused":
        reducer = world.average_ if world.distributed else None
        trainer = fastmlp.FusedMLPTrainer(cast(MLP, model), optimizer, reducer, label_smoothing=config.label_smoothing)
        return trainer.step
    network = DistributedDataParallel(model) if world.distributed else model
    objective = Objective(config.label_smoothing, trainee.teacher, config.distill_temperature, config.distill_weight)
    return AutogradStep(network, optimizer, objective, trainee.autocast)
