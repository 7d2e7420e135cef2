"""Training: `fit` runs the epochs and returns the history; `train` builds, fits, tests and saves a run."""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import fastmlp
from .config import TrainConfig, resolve_device
from .data import BatchLoader, Dataset, Split, load_dataset, to_float
from .errors import ConfigError
from .evaluate import evaluate, predict_logits
from .models import count_parameters, create_model
from .runs import Run, new_run_folder, save_run

EpochCallback = Callable[[dict], None]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer; Adam and AdamW use torch's fused kernel (the same one the fused step calls)."""
    params, lr, decay = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay, fused=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay)


def choose_engine(config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """'fused' when the hand-fused MLP step applies (and engine is auto or fused), else 'autograd'."""
    fusable = fastmlp.supports(model, optimizer)
    if config.engine == "fused" and not fusable:
        raise ConfigError("engine 'fused' needs an MLP without dropout trained with adam or adamw")
    return "fused" if fusable and config.engine != "autograd" else "autograd"


def autograd_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches, logits_out: torch.Tensor) -> None:
    """One pass with autograd over `batches`; the logits of each go to the next rows of `logits_out`."""
    start = 0
    for images, labels in batches:
        logits = model(to_float(images))
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        logits_out[start:start + labels.shape[0]] = logits.detach()
        start += labels.shape[0]


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, config: TrainConfig,
        on_epoch: EpochCallback | None = None, engine: str = "autograd") -> list[dict]:
    """Train for config.epochs and return one record per epoch.

    Each record holds the epoch number, the running train loss/accuracy over the epoch, the
    validation loss/accuracy after it, and its wall-clock seconds (validation included).
    Denormal floats are flushed to zero meanwhile: Adam's second moments of tiny gradients
    otherwise fall into the slow denormal path and cost several times more.
    """
    device = next(model.parameters()).device
    loader = BatchLoader(dataset.train.to(device), config.batch_size, shuffle=True,
                         generator=torch.Generator().manual_seed(config.seed))
    fused = fastmlp.FusedMLPTrainer(model, optimizer) if engine == "fused" else None
    logits = torch.empty(len(loader.labels), len(dataset.classes), device=device)
    history = []
    flushing = torch.set_flush_denormal(True)
    try:
        for epoch_number in range(1, config.epochs + 1):
            started = time.perf_counter()
            model.train()
            order = loader.order()
            if fused is not None:
                fused.train_epoch(loader.batches(order), logits)
            else:
                autograd_epoch(model, optimizer, loader.batches(order), logits)
            record = {"epoch": epoch_number, **_scores("train", logits, loader.labels[order]),
                      **_scores("val", _val_logits(model, dataset.val), dataset.val.labels)}
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    finally:
        if flushing:
            torch.set_flush_denormal(False)
    return history


def _val_logits(model: nn.Module, val: Split) -> torch.Tensor | None:
    return predict_logits(model, val.images) if len(val) else None


def _scores(prefix: str, logits: torch.Tensor | None, labels: torch.Tensor) -> dict:
    if logits is None:
        return {f"{prefix}_loss": None, f"{prefix}_accuracy": None}
    labels = labels.to(logits.device)
    return {f"{prefix}_loss": F.cross_entropy(logits, labels).item(),
            f"{prefix}_accuracy": (logits.argmax(1) == labels).double().mean().item()}


def train(config: TrainConfig | None = None, dataset: Dataset | None = None,
          on_epoch: EpochCallback | None = None, save: bool = True) -> Run:
    """Build the configured model, fit it, evaluate it once on the test set and save the run folder.

    Returns the Run (model, resolved config, metrics, folder). With save=False nothing is written.
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if dataset is None:
        dataset = load_dataset(config.dataset, val_size=config.val_size, split_seed=config.split_seed)
    torch.manual_seed(config.seed)
    model = create_model(config.model, **config.model_kwargs).to(device)
    optimizer = build_optimizer(model, config)
    engine = choose_engine(config, model, optimizer)
    folder = new_run_folder(config) if save else None
    started = time.perf_counter()
    history = fit(model, optimizer, dataset, config, on_epoch, engine)
    train_seconds = time.perf_counter() - started
    test = evaluate(model, dataset.test, dataset.classes)
    metrics = {
        "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "val_accuracy": history[-1]["val_accuracy"], "val_loss": history[-1]["val_loss"],
        "train_seconds": train_seconds, "parameters": count_parameters(model),
        "engine": engine, "device": str(device), "history": history, "test": test,
    }
    run = Run(path=folder, model=model, config=config, metrics=metrics, dataset=dataset.name,
              dataset_sha256=dataset.sha256, classes=dataset.classes)
    if save:
        save_run(run)
    return run
