"""Training: `fit` runs the epochs and returns the history; `train` builds, fits, tests and saves a run."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig, resolve_device, resolve_precision
from ..data.augment import augment_batch
from ..data.datasets import BatchLoader, Dataset, Split, load_dataset, to_float
from ..errors import ConfigError, DigitlabError, DivergenceError, RunError
from ..files import read_json, write_json
from ..images.preprocess import deskew
from ..inference.evaluate import evaluate, predict_logits
from ..inference.ood import fit_detector
from ..models.nets import count_parameters, create_model, in_preferred_layout
from ..runs.checkpoint import CHECKPOINT_FILE, BestEpoch, Progress, load_checkpoint, save_checkpoint
from ..runs.checkup import Commands
from ..runs.checkup.curves import end_of_training_alarm
from ..runs.run import CONFIG_FILE, METRICS_FILE, Run, load_run, new_run_folder, save_config, save_run
from ..tracking import trackers as _registering  # noqa: F401  registers the trackers config.log names
from ..tracking.registry import EpochBar, Trackers, all_of
from .distributed import World, init_from_environment, local_device
from .divergence import LossWatch
from .recipes import learning_rate
from .steps import Trainee, choose_engine, step_function

EpochCallback = Callable[[dict], None]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer; Adam and AdamW use torch's fused kernel (the same one the fused step calls)."""
    params, lr, decay = model.parameters(), config.lr, config.weight_decay
    betas = (float(config.betas[0]), float(config.betas[1]))
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=decay, fused=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay)


def build(config: TrainConfig, device: torch.device | str = "cpu") -> tuple[nn.Module, torch.optim.Optimizer]:
    """The configured model, initialised from config.seed, on `device`, and its optimizer."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, **config.model_arguments()).to(device)
    model = in_preferred_layout(model, model)
    return model, build_optimizer(model, config)


@dataclasses.dataclass
class Tracking:
    """What `fit` keeps: where training stands (`progress`, default the start), the best epoch so far
    (used with config.keep_best), and what to call after each epoch: `checkpoint(progress)`, then
    `on_epoch(record)`."""

    progress: Progress = dataclasses.field(default_factory=Progress)
    best: BestEpoch = dataclasses.field(default_factory=BestEpoch)
    checkpoint: Callable[[Progress], None] | None = None
    on_epoch: EpochCallback | None = None

    def add(self, record: dict, model: nn.Module, keep_best: bool) -> None:
        """Append the epoch's record to the progress, offer the model to `best`, then checkpoint and tell."""
        self.progress = Progress(record["epoch"], [*self.progress.history, record])
        if keep_best:
            self.best.offer(record, model)
        if self.checkpoint is not None:
            self.checkpoint(self.progress)
        if self.on_epoch is not None:
            self.on_epoch(record)


def fit(
    trainee: Trainee,
    dataset: Dataset,
    config: TrainConfig,
    generator: torch.Generator | None = None,
    tracking: Tracking | None = None,
) -> list[dict]:
    """Train from `tracking.progress` (default: the start) up to config.epochs; return the history of all epochs.

    Each record holds the epoch number, the running train loss/accuracy over the epoch, the
    validation loss/accuracy after it, the learning rate at its end and its wall-clock seconds
    (validation included). `generator` draws the batch order and augmentation (default: seeded
    from config.seed). Under torchrun (`trainee.world`), each rank trains on its shard of every
    batch and gradients are averaged across ranks. With config.keep_best the model ends with the
    weights of its best validation epoch (`tracking.best`).
    """
    tracking = tracking or Tracking()
    generator = generator or torch.Generator().manual_seed(config.seed)
    model, optimizer, world = trainee.model, trainee.optimizer, trainee.world
    device = next(model.parameters()).device
    loader = BatchLoader(
        dataset.train.to(device), config.batch_size, shuffle=True, generator=generator, shard=world.shard
    )
    step = step_function(trainee, config)  # forward, loss, backward, optimizer step: autograd or the fused MLP
    augmentation = config.augmentation()
    scheduled = config.schedule != "constant" or config.warmup > 0  # else the optimizer keeps its rate
    logits = torch.empty(len(loader.labels), len(dataset.classes), device=device)  # (N, C): the epoch's, as it went
    watch = LossWatch(len(dataset.classes), len(loader), world)
    with _denormals_flushed():
        for epoch in range(tracking.progress.epoch + 1, config.epochs + 1):
            started, filled = time.perf_counter(), 0
            model.train()
            order = loader.order()
            for number, (images, labels) in enumerate(loader.batches(order), start=1):
                if scheduled:  # the rate is a function of the global step, so a resume needs no state
                    done = (epoch - 1) * len(loader) + number - 1
                    _set_rate(optimizer, learning_rate(done, config.epochs * len(loader), config))
                if augmentation.active:
                    images = augment_batch(to_float(images), augmentation, generator)
                rows = logits[filled : filled + labels.shape[0]]
                step(images, labels, rows)
                watch.see(epoch, number, rows, labels, optimizer.param_groups[0]["lr"])
                filled += labels.shape[0]
            watch.end_of_epoch(epoch)
            seen = loader.labels[loader.local_indices(order)]
            record = {
                "epoch": epoch,
                **_scores("train", logits[:filled], seen, world),
                **_scores("val", _val_logits(model, dataset.val), dataset.val.labels),
                "lr": optimizer.param_groups[0]["lr"],
            }
            record["seconds"] = time.perf_counter() - started
            tracking.add(record, model, config.keep_best)
    if config.keep_best:
        tracking.best.restore(model)
    return tracking.progress.history


def _set_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate


@contextlib.contextmanager
def _denormals_flushed():
    """Flush denormal floats to zero meanwhile: Adam's second moments of tiny gradients otherwise
    fall into the slow denormal path and cost several times more."""
    flushing = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def _val_logits(model: nn.Module, val: Split) -> torch.Tensor | None:
    return predict_logits(model, val.images) if len(val) else None


def _scores(prefix: str, logits: torch.Tensor | None, labels: torch.Tensor, world: World = World()) -> dict:
    """Mean loss and accuracy, summed over ranks when training is distributed."""
    if logits is None:
        return {f"{prefix}_loss": None, f"{prefix}_accuracy": None}
    labels = labels.to(logits.device)
    totals = torch.stack(
        [
            F.cross_entropy(logits, labels, reduction="sum"),
            (logits.argmax(1) == labels).sum().float(),
            torch.tensor(float(labels.shape[0]), device=logits.device),
        ]
    )
    # float64 sums stay exact over ranks; MPS has no float64, and one process needs no all-reduce
    totals = totals.double() if logits.device.type != "mps" else totals.cpu().double()
    loss_sum, correct, count = world.sum_(totals).tolist()
    return {f"{prefix}_loss": loss_sum / count, f"{prefix}_accuracy": correct / count}


def train(
    config: TrainConfig | None = None,
    dataset: Dataset | None = None,
    on_epoch: EpochCallback | None = None,
    save: bool = True,
    resume_from: str | Path | None = None,
    test: bool = True,
    progress: bool = False,
) -> Run:
    """Build the configured model, fit it, evaluate it once on the test set and save the run folder.

    The folder gets config.json at the start and a checkpoint after every epoch, so a run that
    dies can continue with `resume`. Returns the Run (model, resolved config, metrics, folder).
    With save=False nothing is written; with test=False the test set is never looked at (model
    selection, e.g. tuning) and the metrics hold no test figures. Ctrl-C raises Interrupted,
    naming the resume command. With a validation split, the model gets its out-of-distribution
    detector (`run.ood`, see digitlab.inference.ood) before it is tested and saved. `progress` shows a bar
    over epochs (a widget in Jupyter, text on a terminal). The trackers config.log names
    (digitlab.tracking) are checked before training starts and get every epoch; one that fails
    mid-run is dropped with a warning and `run.metrics["tracking"]` says its log is incomplete.
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    world = init_from_environment(device)
    device = local_device(device)
    if config.log and not save:
        raise ConfigError("experiment tracking (log) needs a run folder: train with save=True")
    trackers = Trackers.open(config) if config.log and world.is_main else None
    if config.threads:
        torch.set_num_threads(config.threads)
    dataset = _training_data(config, dataset)
    teacher = _load_teacher(config.teacher, device)
    model, optimizer = build(config, device)
    generator = torch.Generator().manual_seed(config.seed)
    done = Progress()
    folder = Path(resume_from) if resume_from else None
    if folder is not None:
        done = load_checkpoint(folder / CHECKPOINT_FILE, model, optimizer, generator)
        _set_rate(optimizer, config.lr)  # the config's rate, which a resume may lower after divergence
    elif save and world.is_main:
        folder = new_run_folder(config)
        save_config(folder, config, dataset)
    writer = folder if world.is_main else None
    best = BestEpoch(writer, done.history, model)
    checkpoint = None
    if writer is not None:
        checkpoint = lambda state: save_checkpoint(writer / CHECKPOINT_FILE, model, optimizer, generator, state)  # noqa: E731
        if trackers is not None:
            trackers.start(writer, config, done.history)
    bar = EpochBar(config.epochs, done.epoch) if progress and world.is_main else None
    tell = all_of(on_epoch, trackers.epoch if trackers else None, bar.update if bar else None)
    engine = choose_engine(config, model, optimizer)
    autocast, precision = resolve_precision(config.precision, device) if engine == "autograd" else (None, "fp32")
    trainee = Trainee(model, optimizer, engine, teacher, world, autocast)
    tracking = Tracking(done, best, checkpoint, tell)
    try:
        history = fit(trainee, dataset, config, generator, tracking)
    except KeyboardInterrupt:
        raise Interrupted(folder) from None
    except DivergenceError as error:
        raise error.with_hint(_divergence_hint(writer, tracking.progress.epoch, config.lr)) from None
    finally:
        if bar is not None:
            bar.close()
    fitted = Fitted(model, config, dataset, history, best, trainee.engine, precision, device, writer)
    run = _finish(fitted, test)
    if test and world.is_main:  # a real run, not a tuning trial: say so when it learned nothing
        _speak_up(history, config, len(dataset.classes), writer)
    if trackers is not None and writer is not None:
        run.metrics["tracking"] = trackers.finish(run, dataset)
        write_json(writer / METRICS_FILE, run.metrics)
    world.barrier()
    return run


def _speak_up(history: list[dict], config: TrainConfig, classes: int, folder: Path | None) -> None:
    commands = Commands(str(folder) if folder else None, config.model, config.out is not None)
    alarm = end_of_training_alarm(history, classes, config.lr, config.optimizer, commands)
    if alarm:
        warnings.warn(alarm, stacklevel=3)


def _divergence_hint(folder: Path | None, done_epochs: int, lr: float) -> str:
    smaller = f"{lr / 10:g}"
    if folder is not None and done_epochs:
        return (
            f"the checkpoint of epoch {done_epochs} is kept; continue with a smaller learning rate: "
            f"digitlab train --resume {folder} --lr {smaller}"
        )
    if folder is not None:
        return f"no epoch completed; start again with a smaller learning rate, e.g. --lr {smaller}"
    return f"try a smaller learning rate, e.g. lr={smaller}"


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
        images = (
            torch.cat(
                [deskew(to_float(split.images[start : start + 10_000])) for start in range(0, len(split), 10_000)]
            )
            if len(split)
            else to_float(split.images)
        )
        return dataclasses.replace(split, images=(images * 255).round().clamp(0, 255).to(torch.uint8))

    return dataclasses.replace(
        dataset, train=straighten(dataset.train), val=straighten(dataset.val), test=straighten(dataset.test)
    )


def _training_data(config: TrainConfig, dataset: Dataset | None) -> Dataset:
    """`dataset` (default: config.dataset, loaded) limited to config.train_size and deskewed if the config says so."""
    if dataset is None:
        dataset = load_dataset(config.dataset, val_size=config.val_size, split_seed=config.split_seed)
    dataset = _limit_training_images(dataset, config.train_size)
    return deskewed(dataset) if config.preprocessing().deskew else dataset


def _limit_training_images(dataset: Dataset, count: int) -> Dataset:
    if not count:
        return dataset
    if count > len(dataset.train):
        raise ConfigError(f"train size {count} exceeds the {len(dataset.train):,} training images")
    return dataclasses.replace(dataset, train=dataset.train.take(count))


def resume(
    folder: str | Path,
    epochs: int | None = None,
    on_epoch: EpochCallback | None = None,
    dataset: Dataset | None = None,
    lr: float | None = None,
    progress: bool = False,
) -> Run:
    """Continue the run in `folder` from its last complete epoch (to `epochs` in all, if given).

    `lr` replaces the learning rate from there on: after training diverged (DivergenceError), a
    smaller one continues from the last good checkpoint. The run's config.json records it once the
    run finishes; each epoch's record holds the rate it ended with.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"no run folder at {folder}")
    config = TrainConfig.from_dict(read_json(folder / CONFIG_FILE).get("config", {}))
    if epochs is not None:
        config = config.replace(epochs=epochs)
    if lr is not None:
        config = config.replace(lr=lr)
    return train(config, dataset, on_epoch, save=True, resume_from=folder, progress=progress)


class Interrupted(DigitlabError):
    """Training stopped by Ctrl-C; the last complete epoch's checkpoint is on disk."""

    exit_code = 130

    def __init__(self, folder: Path | None):
        where = f"; resume with: digitlab train --resume {folder}" if folder else ""
        super().__init__(f"interrupted; the checkpoint of the last complete epoch is kept{where}")


@dataclasses.dataclass(frozen=True)
class Fitted:
    """What `train` has once `fit` returns: the model, its config and data, the history and best
    epoch, the engine and precision that stepped it, the device, and the run folder (None: not saved)."""

    model: nn.Module
    config: TrainConfig
    dataset: Dataset
    history: list[dict]
    best: BestEpoch
    engine: str
    precision: str
    device: torch.device
    folder: Path | None


def _finish(fitted: Fitted, test: bool = True) -> Run:
    """The Run: the model's out-of-distribution detector, the test scores and the metrics, saved to its folder.

    The detector's threshold is set on validation digits, so none without them; tuning trials
    (test=False) are thrown away and skip the cost.
    """
    model, config, dataset, history = fitted.model, fitted.config, fitted.dataset, fitted.history
    if test and len(dataset.val):
        classes = len(dataset.classes)
        detector = fit_detector(
            model, dataset.train.images, dataset.train.labels, dataset.val.images, classes, seed=config.seed
        )
        model.ood = detector  # type: ignore[assignment]  # a plain attribute, not a parameter or buffer
    scores = evaluate(model, dataset.test, dataset.classes) if test else None
    best = fitted.best.epoch
    final = history[best - 1] if config.keep_best and best else (history[-1] if history else {})
    metrics = {
        "test_accuracy": scores and scores["accuracy"],
        "test_loss": scores and scores["loss"],
        "val_accuracy": final.get("val_accuracy"),
        "val_loss": final.get("val_loss"),
        "epoch": final.get("epoch"),
        "train_seconds": sum(record["seconds"] for record in history),
        "parameters": count_parameters(model),
        "engine": fitted.engine,
        "precision": fitted.precision,
        "device": str(fitted.device),
        "history": history,
        "test": scores,
    }
    run = Run(
        path=fitted.folder,
        model=model,
        config=config,
        metrics=metrics,
        dataset=dataset.name,
        dataset_sha256=dataset.sha256,
        classes=dataset.classes,
        preprocess=config.preprocessing(),
    )
    if fitted.folder is not None:
        save_run(run)
    return run
