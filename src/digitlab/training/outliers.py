"""Outlier exposure: teach a trained digit model to say "not a digit" (Hendrycks et al. 2019).

The pictures are the ones `predict` would hand the model: digits rendered the real-world suite's ways
from MNIST's *training* split, and the non-digit suite's *training* part, each read by the run's own
preprocessing (`prepare_pictures`). `expose` fine-tunes the model on MNIST's training digits with
non-digits mixed into every batch and a temporary "not a digit" head on the penultimate features, so
the features themselves come to separate the two; the class head keeps learning the digits. Batch
norm keeps the statistics of digits (its layers stay in eval mode). Afterwards the detectors are
fitted anew on the changed features (`teach_rejection`): the Mahalanobis views on MNIST's training
digits, then the learned judge (inference.rejection) with its threshold on digits rendered from the
*validation* split. The test split is never looked at here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PreprocessOptions, TrainConfig
from ..data.augment import AugmentConfig, augment_batch
from ..data.datasets import Dataset, Split, load_dataset, to_float
from ..errors import ConfigError
from ..inference.evaluate import evaluate
from ..inference.nondigits import KINDS, as_sample, render_nondigits
from ..inference.ood import QUANTILE, blank_noise, fit_detector, observe, random_strokes
from ..inference.realworld import read_suite, render_suite
from ..inference.rejection import LearnedDetector, fit_learned_detector
from ..models.nets import in_preferred_layout
from ..runs.run import Run, save_run
from .recipes import learning_rate

MNIST_DIGITS = 10_000  # MNIST training digits, as they are, beside the rendered ones the judge learns from
RAW_NONDIGITS = 400  # unprepared non-digits of each source (raw_nondigits)
VAL_DIGITS = 300  # validation digits per condition at least: a 99.5% quantile of 1,100 rests on 5 digits


@dataclass
class ExposurePictures:
    """uint8 (N, 1, 28, 28) pictures as predict prepares them. Training: `digits`, `nondigits`.
    Validation: `val_digits` (they set the threshold), `val_nondigits` with `val_refused` (no ink found)
    and `val_kinds` (index into nondigits.KINDS)."""

    digits: torch.Tensor
    nondigits: torch.Tensor
    val_digits: torch.Tensor
    val_nondigits: torch.Tensor
    val_refused: torch.Tensor
    val_kinds: torch.Tensor


@dataclass(frozen=True)
class Exposure:
    """How `expose` fine-tunes: passes over MNIST's training digits, the peak learning rate (cosine to 0),
    the weight of the not-a-digit loss, and digits and non-digits per batch."""

    epochs: int = 2
    lr: float = 5e-4
    weight: float = 1.0
    digits_per_batch: int = 128
    nondigits_per_batch: int = 64
    seed: int = 0

    def __post_init__(self):
        if (
            self.epochs < 0
            or self.lr <= 0
            or self.weight < 0
            or min(self.digits_per_batch, self.nondigits_per_batch) < 1
        ):
            raise ConfigError(f"outlier exposure out of range: {self}")


def prepare_pictures(
    preprocess: PreprocessOptions,
    digits: int,
    nondigits: int | Mapping[str, int],
    workers: int = 2,
    log: Callable[[str], None] = lambda message: None,
) -> ExposurePictures:
    """Render and read `digits` digits per real-world condition and `nondigits` non-digits of each kind
    (or so many of the kinds a mapping names) of the training part; for validation a fifth as many
    digits (at least VAL_DIGITS per condition) and a tenth as many non-digits of every kind (at least 50).
    Each set is made in one of `workers` processes, and each is the same whenever it is made again."""
    counts = {kind: nondigits for kind in KINDS} if isinstance(nondigits, int) else dict(nondigits)
    if digits < 1 or set(counts) - set(KINDS) or min(counts.values(), default=0) < 1:
        raise ConfigError(f"outlier exposure needs at least one digit and one non-digit of kinds among {KINDS}")
    log(f"rendering and reading {digits} digits per condition and non-digits {counts}")
    val_count = max(50, round(sum(counts.values()) / len(counts) / 10))
    tasks = [("digits", "", digits), ("val_digits", "", max(VAL_DIGITS, digits // 5))]
    tasks += [("nondigits", kind, count) for kind, count in counts.items()]
    tasks += [("val_nondigits", kind, val_count) for kind in KINDS]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:  # fork hangs torch
        done = list(pool.map(_prepare, *zip(*tasks, strict=True), [preprocess.to_dict()] * len(tasks)))
    sets = defaultdict(list)
    for (name, _, _), result in zip(tasks, done, strict=True):
        sets[name].append(result)
    (digit_images, digit_refused), (val_images, val_refused) = sets["digits"][0], sets["val_digits"][0]
    nondigit_images, nondigit_refused, _ = (torch.cat(parts) for parts in zip(*sets["nondigits"], strict=True))
    val_nondigits, val_nondigits_refused, val_kinds = (
        torch.cat(parts) for parts in zip(*sets["val_nondigits"], strict=True)
    )
    mnist = load_dataset("mnist")
    return ExposurePictures(
        digits=torch.cat([digit_images[~digit_refused], mnist.train.images[:MNIST_DIGITS]]),
        nondigits=nondigit_images[~nondigit_refused],
        val_digits=val_images[~val_refused],
        val_nondigits=val_nondigits,
        val_refused=val_nondigits_refused,
        val_kinds=val_kinds,
    )


def _prepare(task: str, kind: str, count: int, options: dict):
    """One set of pictures (in a process of its own: rendering and preprocessing dominate)."""
    preprocess = PreprocessOptions(**options)
    mnist = load_dataset("mnist")
    if task in ("digits", "val_digits"):
        split, seed = (mnist.train, 100) if task == "digits" else (mnist.val, 0)
        suite = read_suite(render_suite(split.images, split.labels, count, seed=seed), preprocess)
        return suite.images, suite.refused
    fashion = load_dataset("fashion-mnist")
    part, digits, items = (
        ("train", mnist.train, fashion.train) if task == "nondigits" else ("val", mnist.val, fashion.val)
    )
    pictures = list(render_nondigits(part, count, digits, items, kinds=(kind,)))
    suite = read_suite((as_sample(picture) for picture in pictures), preprocess)
    return suite.images, suite.refused, torch.full((len(pictures),), KINDS.index(kind))


def expose(
    model: nn.Module,
    train: Split,
    nondigits: torch.Tensor,
    augmentation: AugmentConfig,
    exposure: Exposure = Exposure(),
    label_smoothing: float = 0.1,
) -> list[dict]:
    """Fine-tune `model` in place on `train`'s digits with `nondigits` (uint8 pictures) in every batch, both
    augmented alike; returns one record per epoch (mean loss, seconds)."""
    generator = torch.Generator().manual_seed(exposure.seed)
    torch.manual_seed(exposure.seed)
    digits = exposure.digits_per_batch
    outliers = exposure.nondigits_per_batch if exposure.weight else 0  # weight 0: a fine-tune on digits alone
    judge = nn.Linear(_width(model), 1)  # the temporary "not a digit" head; the learned judge replaces it
    optimizer = torch.optim.AdamW([*model.parameters(), *judge.parameters()], lr=exposure.lr, weight_decay=5e-4)
    targets = torch.cat([torch.zeros(digits), torch.ones(outliers)])
    balance = torch.tensor(digits / max(outliers, 1))  # a non-digit weighs as much as a digit in the loss
    steps, step, history = exposure.epochs * (len(train) // digits), 0, []
    schedule = TrainConfig(lr=exposure.lr, schedule="cosine", warmup=0.0)  # from the peak rate down to 0
    with _digit_statistics(model):
        for epoch in range(1, exposure.epochs + 1):
            started, losses = time.perf_counter(), []
            for batch in torch.randperm(len(train), generator=generator).split(digits):
                if len(batch) < digits:
                    continue
                picks = torch.randint(len(nondigits), (outliers,), generator=generator) if outliers else batch[:0]
                images = to_float(torch.cat([train.images[batch], nondigits[picks]]))
                images = in_preferred_layout(model, augment_batch(images, augmentation, generator))
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, steps, schedule)
                features = model.penultimate(images)  # type: ignore[operator]  # every registered model has it
                logits = model.head(features[:digits])  # type: ignore[operator]  # as penultimate
                loss = F.cross_entropy(logits, train.labels[batch], label_smoothing=label_smoothing)
                if outliers:
                    loss = loss + exposure.weight * F.binary_cross_entropy_with_logits(
                        judge(features)[:, 0], targets, pos_weight=balance
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                step += 1
            history.append(
                {"epoch": epoch, "loss": sum(losses) / len(losses), "seconds": time.perf_counter() - started}
            )
    return history


def _width(model: nn.Module) -> int:
    with torch.no_grad():
        model.eval()
        return int(model.penultimate(torch.zeros(1, 1, 28, 28)).shape[1])  # type: ignore[operator]


@contextlib.contextmanager
def _digit_statistics(model: nn.Module):
    """Train mode with batch norm frozen (its statistics stay those of digits); eval mode afterwards."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        yield
    finally:
        model.eval()


def teach_rejection(
    model: nn.Module,
    mnist: Dataset,
    pictures: ExposurePictures,
    augmentation: AugmentConfig,
    exposure: Exposure = Exposure(),
    quantile: float = QUANTILE,
) -> tuple[LearnedDetector, list[dict]]:
    """Expose `model` (if exposure.epochs), then fit its detectors anew: the Mahalanobis views on MNIST's
    training digits (threshold from its validation digits), the learned judge on `pictures` varied by
    `augmentation` in every pass (the same variation the exposure and the run's training use). Both also
    see raw_nondigits: without them a judge taught only on prepared pictures lets raw tensors through
    (the shipped model's AUROC against raw Fashion-MNIST fell from 0.99 to 0.92, blank pages from 100% to 67%)."""
    nondigits = torch.cat([pictures.nondigits, raw_nondigits(load_dataset("fashion-mnist").train)])
    history = expose(model, mnist.train, nondigits, augmentation, exposure) if exposure.epochs else []
    base = fit_detector(model, mnist.train.images, mnist.train.labels, mnist.val.images, len(mnist.classes))
    detector = fit_learned_detector(
        model, base, pictures.digits, nondigits, pictures.val_digits, quantile, augmentation=augmentation
    )
    return detector, history


def raw_nondigits(fashion_train: Split, count: int = RAW_NONDIGITS) -> torch.Tensor:
    """Non-digits handed over as 28×28 tensors, never prepared: Fashion-MNIST training items, scribbles and
    nearly blank pages (seeds no benchmark or test uses), so the judge also covers `run.predict(tensor)`."""
    return torch.cat([fashion_train.images[:count], random_strokes(count, seed=11), blank_noise(count, seed=12)])


def turned_away_by_kind(model: nn.Module, detector: LearnedDetector, pictures: ExposurePictures) -> dict[str, float]:
    """Share of the validation non-digits of each kind (and 'all') that the detector or the preprocessing turns away."""
    refused = detector.rejects(detector.score(observe(model, pictures.val_nondigits))) | pictures.val_refused
    shares = {kind: float(refused[pictures.val_kinds == number].double().mean()) for number, kind in enumerate(KINDS)}
    return {**shares, "all": float(refused.double().mean())}


def teach_run(
    run: Run,
    digits: int = 250,
    nondigits: int | Mapping[str, int] = 2000,
    exposure: Exposure = Exposure(),
    quantile: float = QUANTILE,
    pictures: ExposurePictures | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Teach `run` to say "not a digit": prepare the pictures (or use `pictures`), expose the model and fit
    its learned judge; then score the validation non-digits, the validation and (once, at the end) the
    test digits, store the judge in the run's metrics and, when the run has a folder, save it. Returns
    what was measured (also in run.metrics['rejection'])."""
    if run.preprocess.deskew:
        raise ConfigError("outlier exposure does not support deskewed runs (their detectors see deskewed digits)")
    data = run.data("exposed on")
    if pictures is None:
        pictures = prepare_pictures(run.preprocess, digits, nondigits, log=log)
    log(
        f"{len(pictures.digits):,} digits and {len(pictures.nondigits):,} non-digits; exposing for {exposure.epochs} epochs"
    )
    detector, history = teach_rejection(run.model, data, pictures, run.config.augmentation(), exposure, quantile)
    run.model.ood = detector  # type: ignore[assignment]  # a plain attribute, as calibrate_ood sets it
    report = {
        "digits": digits,
        "nondigits": nondigits,
        "exposure": dataclasses.asdict(exposure),
        "history": history,
        "threshold": detector.threshold,
        "quantile": quantile,
        "val_turned_away": turned_away_by_kind(run.model, detector, pictures),
        "val_accuracy": float(evaluate(run.model, data.val, data.classes)["accuracy"]),
        "test_accuracy": float(evaluate(run.model, data.test, data.classes)["accuracy"]),
    }
    run.metrics = {**run.metrics, "val_accuracy": report["val_accuracy"], "test_accuracy": report["test_accuracy"]}
    run.metrics["rejection"] = report
    if run.path is not None:
        save_run(run)
    return report
