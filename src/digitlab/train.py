"""Training: `fit` runs the epochs and returns the history; `train` builds, fits, tests and saves a run."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import fastmlp
from .augment import AugmentConfig, augment_batch
from .checkpoint import CHECKPOINT_FILE, BestEpoch, Progress, load_checkpoint, save_checkpoint
from .config import TrainConfig, resolve_device
from .data import BatchLoader, Dataset, Split, load_dataset, to_float
from .distributed import World, init_from_environment, local_device
from .errors import ConfigError, DigitlabError, RunError
from .evaluate import evaluate, predict_logits
from .models import count_parameters, create_model, in_preferred_layout
from .ood import fit_detector
from .preprocess import deskew
from .recipes import learning_rate
from .files import read_json
from .runs import CONFIG_FILE, Run, load_run, new_run_folder, save_config, save_run

EpochCallback = Callable[[dict], None]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer; Adam and AdamW use torch's fused kernel (the same one the fused step calls)."""
    params, lr, decay = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay, fused=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay)


def build(config: TrainConfig, device: torch.device | str = "cpu") -> tuple[nn.Module, torch.optim.Optimizer]:
    """The configured model, initialised from config.seed, on `device`, and its optimizer."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, **config.model_arguments()).to(device)
    model = in_preferred_layout(model, model)
    return model, build_optimizer(model, config)


def choose_engine(config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """'fused' when the hand-fused MLP step applies (and engine is auto or fused), else 'autograd'."""
    fusable = fastmlp.supports(model, optimizer) and config.teacher is None
    if config.engine == "fused" and not fusable:
        raise ConfigError("engine 'fused' needs an MLP without dropout or teacher, trained with adam or adamw")
    return "fused" if fusable and config.engine != "autograd" else "autograd"


@dataclasses.dataclass
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
        return (1 - self.weight) * loss + self.weight * self.temperature ** 2 * distill


def autograd_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches, logits_out: torch.Tensor,
                   on_step=None, objective: Objective = Objective()) -> int:
    """One pass with autograd over `batches`; logits go to successive rows of `logits_out`. Returns rows filled."""
    filled = 0
    for images, labels in batches:
        if on_step is not None:
            on_step()
        inputs = in_preferred_layout(model, to_float(images) if images.dtype == torch.uint8 else images)
        logits = model(inputs)
        loss = objective(logits, inputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        logits_out[filled:filled + labels.shape[0]] = logits.detach()
        filled += labels.shape[0]
    return filled


def augmented(batches, augmentation: AugmentConfig, generator: torch.Generator):
    """Batches with random transforms applied on their device (parameters drawn from `generator`)."""
    for images, labels in batches:
        yield augment_batch(to_float(images), augmentation, generator), labels


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, config: TrainConfig,
        on_epoch: EpochCallback | None = None, engine: str = "autograd", progress: Progress | None = None,
        generator: torch.Generator | None = None, checkpoint: Callable[[Progress], None] | None = None,
        world: World = World(), teacher: nn.Module | None = None, best: BestEpoch | None = None) -> list[dict]:
    """Train from `progress` (default: the start) up to config.epochs; return the history of all epochs.

    Each record holds the epoch number, the running train loss/accuracy over the epoch, the
    validation loss/accuracy after it, the learning rate at its end and its wall-clock seconds
    (validation included). After each epoch `checkpoint(progress)` runs, if given. Under torchrun
    (`world`), each rank trains on its shard of every batch and gradients are averaged across ranks.
    With config.keep_best the model ends with the weights of its best validation epoch (`best`).
    Denormal floats are flushed to zero meanwhile: Adam's second moments of tiny gradients
    otherwise fall into the slow denormal path and cost several times more.
    """
    device = next(model.parameters()).device
    progress = progress or Progress()
    generator = generator or torch.Generator().manual_seed(config.seed)
    loader = BatchLoader(dataset.train.to(device), config.batch_size, shuffle=True, generator=generator,
                         shard=world.shard)
    schedule = _Schedule(optimizer, config, len(loader), progress.epoch)
    step = _epoch_runner(model, optimizer, config, engine, world, teacher)
    augmentation = config.augmentation()
    best = best or BestEpoch()
    logits = torch.empty(len(loader.labels), len(dataset.classes), device=device)
    flushing = torch.set_flush_denormal(True)
    try:
        for epoch_number in range(progress.epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            model.train()
            order = loader.order()
            batches = loader.batches(order)
            if augmentation.active:
                batches = augmented(batches, augmentation, generator)
            filled = step(batches, logits, schedule.on_step)
            seen = loader.labels[loader.local_indices(order)]
            record = {"epoch": epoch_number, **_scores("train", logits[:filled], seen, world),
                      **_scores("val", _val_logits(model, dataset.val), dataset.val.labels),
                      "lr": optimizer.param_groups[0]["lr"]}
            record["seconds"] = time.perf_counter() - started
            progress = Progress(epoch_number, progress.history + [record])
            if config.keep_best:
                best.offer(record, model)
            if checkpoint is not None:
                checkpoint(progress)
            if on_epoch is not None:
                on_epoch(record)
    finally:
        if flushing:
            torch.set_flush_denormal(False)
    if config.keep_best:
        best.restore(model)
    return progress.history


class _Schedule:
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


def _epoch_runner(model, optimizer, config: TrainConfig, engine: str, world: World, teacher):
    """A function (batches, logits_out, on_step) -> rows filled, for the chosen engine."""
    if engine == "fused":
        reducer = world.average_ if world.distributed else None
        trainer = fastmlp.FusedMLPTrainer(model, optimizer, reducer, label_smoothing=config.label_smoothing)
        return trainer.train_epoch
    network = DistributedDataParallel(model) if world.distributed else model
    objective = Objective(config.label_smoothing, teacher, config.distill_temperature, config.distill_weight)
    return lambda batches, logits, on_step: autograd_epoch(network, optimizer, batches, logits, on_step, objective)


def _val_logits(model: nn.Module, val: Split) -> torch.Tensor | None:
    return predict_logits(model, val.images) if len(val) else None


def _scores(prefix: str, logits: torch.Tensor | None, labels: torch.Tensor, world: World = World()) -> dict:
    """Mean loss and accuracy, summed over ranks when training is distributed."""
    if logits is None:
        return {f"{prefix}_loss": None, f"{prefix}_accuracy": None}
    labels = labels.to(logits.device)
    totals = torch.stack([F.cross_entropy(logits, labels, reduction="sum"),
                          (logits.argmax(1) == labels).sum().float(),
                          torch.tensor(float(labels.shape[0]), device=logits.device)]).double()
    loss_sum, correct, count = world.sum_(totals).tolist()
    return {f"{prefix}_loss": loss_sum / count, f"{prefix}_accuracy": correct / count}


def train(config: TrainConfig | None = None, dataset: Dataset | None = None,
          on_epoch: EpochCallback | None = None, save: bool = True, resume_from: str | Path | None = None,
          test: bool = True) -> Run:
    """Build the configured model, fit it, evaluate it once on the test set and save the run folder.

    The folder gets config.json at the start and a checkpoint after every epoch, so a run that
    dies can continue with `resume`. Returns the Run (model, resolved config, metrics, folder).
    With save=False nothing is written; with test=False the test set is never looked at (model
    selection, e.g. tuning) and the metrics hold no test figures. Ctrl-C raises Interrupted,
    naming the resume command. With a validation split, the model gets its out-of-distribution
    detector (`run.ood`, see digitlab.ood) before it is tested and saved.
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    world = init_from_environment(device)
    device = local_device(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if dataset is None:
        dataset = load_dataset(config.dataset, val_size=config.val_size, split_seed=config.split_seed)
    dataset = _limit_training_images(dataset, config.train_size)
    if config.preprocessing().deskew:
        dataset = deskewed(dataset)
    teacher = _load_teacher(config.teacher, device)
    model, optimizer = build(config, device)
    generator = torch.Generator().manual_seed(config.seed)
    progress = Progress()
    folder = Path(resume_from) if resume_from else None
    if folder is not None:
        progress = load_checkpoint(folder / CHECKPOINT_FILE, model, optimizer, generator)
    elif save and world.is_main:
        folder = new_run_folder(config)
        save_config(folder, config, dataset)
    writer = folder if world.is_main else None
    best = BestEpoch(writer, progress.history, model)
    checkpoint = None
    if writer is not None:
        checkpoint = lambda done: save_checkpoint(writer / CHECKPOINT_FILE, model, optimizer, generator, done)  # noqa: E731
    engine = choose_engine(config, model, optimizer)
    try:
        history = fit(model, optimizer, dataset, config, on_epoch, engine, progress, generator, checkpoint, world,
                      teacher, best)
    except KeyboardInterrupt:
        raise Interrupted(folder) from None
    run = _finish(model, config, dataset, history, engine, device, writer, best, test)
    world.barrier()
    return run


def _load_teacher(path: str | None, device: torch.device) -> nn.Module | None:
    if path is None:
        return None
    teacher = load_run(path, device).model.eval()
    teacher = in_preferred_layout(teacher, teacher)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def deskewed(dataset: Dataset) -> Dataset:
    """The dataset with every split's digits deskewed, as a model trained with `preprocess="deskew"` sees them."""
    def straighten(split: Split) -> Split:
        images = torch.cat([deskew(to_float(split.images[start:start + 10_000]))
                            for start in range(0, len(split), 10_000)]) if len(split) else to_float(split.images)
        return dataclasses.replace(split, images=(images * 255).round().clamp(0, 255).to(torch.uint8))
    return dataclasses.replace(dataset, train=straighten(dataset.train), val=straighten(dataset.val),
                               test=straighten(dataset.test))


def _limit_training_images(dataset: Dataset, count: int) -> Dataset:
    if not count:
        return dataset
    if count > len(dataset.train):
        raise ConfigError(f"train size {count} exceeds the {len(dataset.train):,} training images")
    return dataclasses.replace(dataset, train=dataset.train.take(count))


def resume(folder: str | Path, epochs: int | None = None, on_epoch: EpochCallback | None = None,
           dataset: Dataset | None = None) -> Run:
    """Continue the run in `folder` from its last complete epoch (to `epochs` in all, if given)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"no run folder at {folder}")
    config = TrainConfig.from_dict(read_json(folder / CONFIG_FILE).get("config", {}))
    if epochs is not None:
        config = config.replace(epochs=epochs)
    return train(config, dataset, on_epoch, save=True, resume_from=folder)


class Interrupted(DigitlabError):
    """Training stopped by Ctrl-C; the last complete epoch's checkpoint is on disk."""

    exit_code = 130

    def __init__(self, folder: Path | None):
        where = f"; resume with: digitlab train --resume {folder}" if folder else ""
        super().__init__(f"interrupted; the checkpoint of the last complete epoch is kept{where}")


def _finish(model, config, dataset, history, engine, device, folder, best: BestEpoch, test: bool = True) -> Run:
    # The out-of-distribution threshold is set on validation digits, so none without them; tuning
    # trials (test=False) are thrown away and skip the cost.
    if test and len(dataset.val):
        model.ood = fit_detector(model, dataset.train.images, dataset.train.labels, dataset.val.images,
                                 len(dataset.classes), seed=config.seed)
    scores = evaluate(model, dataset.test, dataset.classes) if test else None
    final = history[best.epoch - 1] if config.keep_best and best.epoch else (history[-1] if history else {})
    metrics = {
        "test_accuracy": scores and scores["accuracy"], "test_loss": scores and scores["loss"],
        "val_accuracy": final.get("val_accuracy"), "val_loss": final.get("val_loss"),
        "epoch": final.get("epoch"), "train_seconds": sum(record["seconds"] for record in history),
        "parameters": count_parameters(model), "engine": engine, "device": str(device),
        "history": history, "test": scores,
    }
    run = Run(path=folder, model=model, config=config, metrics=metrics, dataset=dataset.name,
              dataset_sha256=dataset.sha256, classes=dataset.classes, preprocess=config.preprocessing())
    if folder is not None:
        save_run(run)
    return run
