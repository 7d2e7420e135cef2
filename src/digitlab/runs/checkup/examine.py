"""The checkup of a finished run: `examine(patient)` runs every check on the model, its history, its
data and its answers, and returns the Findings, worst first.

Nothing here trains: what needs training (the learning-rate range test, cross-validated label
suspects) lives in digitlab.doctor, a floor up. Validation digits are what the checks read (the
test set stays for the run's one final score); training digits are the ones the run trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...config import PreprocessOptions, TrainConfig
from ...data.datasets import Dataset, Split, to_float
from ...images.preprocess import deskew
from ...inference.evaluate import predict_logits
from . import curves, insides, outputs
from .findings import Commands, Finding, Findings

DIGITS = tuple("0123456789")
# Findings that name a cause whose fix is not a bigger model; when one speaks, `underfitting` (its
# symptom) is left out. Dead units are not among them: a model far too small also loses some.
CAUSES = ("chance", "learning-rate-high", "learning-rate-low", "input-scale")


@dataclass
class Patient:
    """What a checkup examines: the model, its history (None for a bare model file), its dataset with
    `train` holding the digits it trained on, its config, how its pictures are prepared, its folder."""

    model: nn.Module
    history: list[dict] | None
    data: Dataset
    config: TrainConfig
    preprocess: PreprocessOptions = PreprocessOptions()
    folder: Path | None = None


@dataclass(frozen=True)
class Probes:
    """How much a checkup looks at (each a trade of seconds for certainty)."""

    val_images: int = 2000  # validation digits for activations, calibration and confusions
    train_images: int = 10_000  # training digits for the fit gap and label noise
    gradient_batches: int = 4  # training batches of 128 whose gradients are measured
    real_world: int = 20  # real-world pictures per condition (11 conditions); 0 skips the suite
    seed: int = 0


def examine(patient: Patient, probes: Probes = Probes()) -> Findings:
    """Every check of a finished run (curves, insides, outputs), worst first. A check that cannot run
    on this run says so as `info`."""
    config, data, classes = patient.config, patient.data, patient.data.classes
    commands = Commands(str(patient.folder) if patient.folder else None, config.model, config.out is not None)
    findings: list[Finding] = []
    if patient.history is not None:
        findings += curves.history_findings(patient.history, len(classes), config.lr, config.optimizer, commands)
    else:
        findings.append(Finding("history", "info", "a bare model file carries no history: curve checks skipped", {}))
    val = _sample(data.val if len(data.val) else data.test, probes.val_images, probes.seed, patient.preprocess)
    train = _sample(data.train, probes.train_images, probes.seed, patient.preprocess)
    found = insides.activity(patient.model, val.images)
    findings.append(insides.input_scale(found, commands))
    findings += insides.dead_units(found, len(classes), config.lr, commands)
    findings += insides.saturated_units(found)
    layers = insides.gradients(patient.model, train, probes.gradient_batches, seed=probes.seed)
    findings += insides.gradient_flow(layers, commands)
    val_probabilities = predict_logits(patient.model, val.images).softmax(1)
    train_probabilities = predict_logits(patient.model, train.images).softmax(1)
    val_accuracy = _accuracy(val_probabilities, val.labels) if len(data.val) else None
    train_accuracy = _accuracy(train_probabilities, train.labels)
    findings.append(outputs.fit_gap(train_accuracy, val_accuracy, narrowest(patient.model), len(classes), commands))
    calibration = outputs.calibrated(val_probabilities, val.labels, config.label_smoothing, config.epochs, commands)
    findings.append(calibration)
    findings.append(outputs.confusions(val.images, val.labels, val_probabilities, classes))
    findings.append(outputs.label_noise(train, train_probabilities, classes, data.name, val_accuracy))
    findings.append(_real_world(patient, val_accuracy, probes, commands))
    return Findings(_without_symptoms(findings))


def _real_world(patient: Patient, val_accuracy: float | None, probes: Probes, commands: Commands) -> Finding:
    if tuple(patient.data.classes) != DIGITS:
        return Finding("real-world-gap", "info", "the real-world suite is of handwritten digits: skipped", {})
    if not probes.real_world or val_accuracy is None:
        return Finding("real-world-gap", "info", "real-world suite not asked for (or no validation split)", {})
    val = patient.data.val
    return outputs.real_world_gap(patient.model, val, val_accuracy, patient.preprocess, probes.real_world, commands)


def _without_symptoms(findings: list[Finding]) -> list[Finding]:
    named = {finding.check for finding in findings if finding.alarming and finding.check in CAUSES}
    return [finding for finding in findings if not (named and finding.check == "underfitting")]


def _sample(split: Split, count: int, seed: int, preprocess: PreprocessOptions) -> Split:
    """Up to `count` examples of `split` drawn without replacement (all of them if fewer), as the model sees them."""
    if len(split) > count:
        index = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        split = Split(split.images[index], split.labels[index])
    if preprocess.deskew:  # the model was trained on straightened digits
        split = dataclasses.replace(
            split, images=(deskew(to_float(split.images)) * 255).round().clamp(0, 255).to(torch.uint8)
        )
    return split


def _accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    return (probabilities.argmax(1) == labels).double().mean().item()


def narrowest(model: nn.Module) -> int | None:
    """The fewest outputs of a hidden Linear layer (not the last one), or None for a model without one."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return min((layer.out_features for layer in linears[:-1]), default=None)
