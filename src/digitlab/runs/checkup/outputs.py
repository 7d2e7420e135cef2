"""Checks on what the model answers: how well it fits its training digits against validation ones
(under- and overfitting), whether its confidence means what it says (calibration), the confusions
that cost most, training labels it confidently disagrees with in one class more than in the others,
and how far it falls on the real-world suite.
"""

from __future__ import annotations

import math

import torch

from ...config import PreprocessOptions
from ...data.datasets import Split
from ...figures import doctor as pictures
from ...figures import predictions as viz
from ...inference.evaluate import calibration, confusion_matrix, most_confused_pairs
from ...inference.realworld import ReadSuite, read_suite, render_suite, suite_accuracy
from .findings import Commands, Finding

OVERFIT_GAP = 0.05  # training accuracy 5 points above validation accuracy
UNDERFIT_ACCURACY = 0.9  # a model that fits under 90% of its own training digits
UNDERFIT_GAP = 0.02  # ... with training and validation within 2 points: it is short of capacity or training
ECE_WARNING, ECE_PROBLEM = 0.05, 0.15
# A class whose confident disagreements exceed 5% and 5× the median class's: a model that merely
# confuses two classes reaches 3-4% in the class it confuses them with (the zoo's runs at seed 1).
NOISE_RATE, NOISE_RATIO = 0.05, 5.0
NOISE_FLOOR = 0.002  # ... the median taken as at least 0.2%
JUDGE_ACCURACY = 0.9  # a model under 90% on validation digits is no judge of labels
REAL_WORLD_GAP = 0.10  # real-world pictures read 10 points worse than validation digits


def fit_gap(
    train_accuracy: float, val_accuracy: float | None, narrowest: int | None, classes: int, commands: Commands
) -> Finding:
    """Overfitting (training far above validation) or underfitting (both low and close), from the final model."""
    if val_accuracy is None:
        return Finding("fit", "info", "no validation split: the fit gap cannot be measured", {})
    gap = train_accuracy - val_accuracy
    evidence = {"train_accuracy": train_accuracy, "val_accuracy": val_accuracy, "gap": gap}
    if gap > OVERFIT_GAP:
        return Finding(
            "overfitting",
            "warning",
            f"Overfitting: the model gets {train_accuracy:.1%} of its training digits right but {val_accuracy:.1%} "
            f"of validation digits ({gap:.1%} apart): it memorises rather than generalises",
            evidence,
            f"more training data, augmentation or weight decay: {commands.train(augment=True, keep_best=True)}",
        )
    if train_accuracy < UNDERFIT_ACCURACY and abs(gap) < UNDERFIT_GAP:
        bigger = commands.train(hidden="128,64") if commands.model == "mlp" else commands.train(model="cnn")
        bottleneck = (
            f"; its narrowest layer has {narrowest} units for {classes} classes"
            if narrowest is not None and narrowest < classes
            else ""
        )
        return Finding(
            "underfitting",
            "warning",
            f"Underfitting: the model gets only {train_accuracy:.1%} of its own training digits right (validation "
            f"{val_accuracy:.1%}){bottleneck}: it lacks capacity or training",
            {**evidence, "narrowest_layer": narrowest},
            f"a bigger model or more epochs: {bigger}",
        )
    return Finding(
        "fit",
        "info",
        f"Training {train_accuracy:.1%} against validation {val_accuracy:.1%}: neither over- nor underfitting",
        evidence,
    )


def calibrated(
    probabilities: torch.Tensor, labels: torch.Tensor, label_smoothing: float, epochs: int, commands: Commands
) -> Finding:
    """Expected calibration error on validation digits; over- or under-confidence beyond ECE_WARNING."""
    result = calibration(probabilities, labels)
    confidence = probabilities.max(1).values.mean().item()
    accuracy = (probabilities.argmax(1) == labels).double().mean().item()
    ece = result["ece"]
    evidence = {"ece": ece, "mean_confidence": confidence, "accuracy": accuracy}
    draw = lambda: viz.reliability_diagram(probabilities, labels)  # noqa: E731
    over = confidence > accuracy
    severity = "problem" if ece >= ECE_PROBLEM else "warning" if ece >= ECE_WARNING else "info"
    if severity != "info" and not over and label_smoothing > 0:
        severity = "info"  # label smoothing lowers confidence on purpose
    word = "over-confident" if over else "under-confident"
    if severity == "info":
        message = f"Calibration: ECE {ece:.2%} (mean confidence {confidence:.1%}, accuracy {accuracy:.1%})"
        return Finding("calibration", "info", message, evidence, draw=draw)
    if over:
        fix = commands.train(label_smoothing=0.1)
    elif label_smoothing > 0:
        fix = commands.train(label_smoothing=0)
    else:  # under-confident without smoothing: still learning
        fix = f"train it further (see the curve findings): {commands.train(epochs=2 * max(1, epochs))}"
    return Finding(
        "calibration",
        severity,
        f"The model is {word}: mean confidence {confidence:.1%} against {accuracy:.1%} right, ECE {ece:.2%}",
        evidence,
        fix,
        draw,
    )


def confusions(images, labels: torch.Tensor, probabilities: torch.Tensor, classes: tuple[str, ...]) -> Finding:
    """The confusions that cost most on validation digits, and the class recalled worst (info, with examples)."""
    predicted = probabilities.argmax(1)
    matrix = confusion_matrix(predicted, labels, len(classes))
    pairs = most_confused_pairs(matrix, 3)
    recall = (matrix.diag().double() / matrix.sum(1).clamp(min=1)).tolist()
    worst = min(range(len(classes)), key=recall.__getitem__)
    said = ", ".join(f"{classes[true]} read as {classes[guess]} ({count}×)" for true, guess, count in pairs)
    return Finding(
        "confusions",
        "info",
        f"Costliest confusions: {said or 'none'}; class {classes[worst]} is recalled worst ({recall[worst]:.1%})",
        {
            "pairs": [{"true": classes[t], "predicted": classes[g], "count": c} for t, g, c in pairs],
            "recall": dict(zip(classes, recall, strict=True)),
        },
        draw=lambda: viz.confused_pairs(images, labels, probabilities, classes),
    )


def label_noise(
    split: Split, probabilities: torch.Tensor, classes: tuple[str, ...], dataset: str, val_accuracy: float | None
) -> Finding:
    """Warning when, in one class, far more training labels than elsewhere are ones the model contradicts
    with confidence: by given label (a class's digits carry wrong labels) or by answer (digits of a class
    carry other classes' labels). Only a model right on JUDGE_ACCURACY of validation digits judges."""
    if val_accuracy is None or val_accuracy < JUDGE_ACCURACY:
        return Finding("label-noise", "info", "the model is too weak (or unvalidated) to judge its labels", {})
    answer = confident_answers(probabilities, split.labels)
    disagree = (answer >= 0) & (answer != split.labels)
    sizes = torch.bincount(split.labels, minlength=len(classes)).double().clamp(min=1)
    rates = {
        side: torch.bincount(by[disagree], minlength=len(classes)).double() / sizes
        for side, by in (("label", split.labels), ("answer", answer))
    }
    side, values = max(rates.items(), key=lambda item: item[1].max().item())
    worst = int(values.argmax())
    rate, median = values[worst].item(), values.median().item()
    evidence = {"class": classes[worst], "by": side, "rate": rate, "median_rate": median, "examined": len(split)}
    confidence = probabilities.max(1).values
    chosen = (disagree & ((split.labels if side == "label" else answer) == worst)).nonzero().squeeze(1)
    chosen = chosen[torch.argsort(confidence[chosen], descending=True)][:15]
    titles = [
        f"label {classes[label]}\nmodel {classes[said]} {sure:.0%}"
        for label, said, sure in zip(
            split.labels[chosen].tolist(), answer[chosen].tolist(), confidence[chosen].tolist(), strict=True
        )
    ]
    draw = lambda: pictures.suspects_sheet(split.images[chosen], titles, "Training digits the model contradicts")  # noqa: E731
    if rate > NOISE_RATE and rate > NOISE_RATIO * max(median, NOISE_FLOOR):
        whose = f"labelled {classes[worst]}" if side == "label" else f"that the model reads as {classes[worst]}"
        return Finding(
            "label-noise",
            "warning",
            f"Label noise around class {classes[worst]}: the model confidently contradicts the label of {rate:.1%} "
            f"of the training digits {whose} (per {classes[worst]} in the data), against {median:.2%} for the "
            "median class",
            evidence,
            f"digitlab doctor data --dataset {dataset} (lists the suspect labels)",
            draw,
        )
    return Finding(
        "label-noise",
        "info",
        f"Training labels the model confidently contradicts: at most {rate:.2%} in a class (median {median:.2%})",
        evidence,
        draw=draw,
    )


def confident_answers(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Confident learning's counting rule (Northcutt et al. 2021): each class's threshold is the mean
    probability the model gives it on the digits labelled with it; a digit's confident answer is its
    likeliest class among those at or above their threshold, -1 where none is. Written here rather
    than taken from cleanlab so a run's checkup needs no optional package; `digitlab doctor data`
    uses cleanlab itself."""
    classes = probabilities.shape[1]
    thresholds = torch.stack(
        [probabilities[labels == k, k].mean() if (labels == k).any() else torch.tensor(1.0) for k in range(classes)]
    )
    above = probabilities >= thresholds
    masked = torch.where(above, probabilities, torch.full_like(probabilities, -1.0))
    answer = masked.argmax(1)
    return torch.where(above.any(1), answer, torch.full_like(answer, -1))


_SUITES: dict[tuple, ReadSuite] = {}  # rendered suites by validation digits and settings: rendering is the cost


def real_world_gap(
    model, val: Split, val_accuracy: float, options: PreprocessOptions, count: int, commands: Commands
) -> Finding:
    """The real-world suite rendered from validation digits (`count` per condition, seed 0) against the
    validation digits themselves."""
    key = (len(val), int(val.images[::97].sum()), int(val.labels.sum()), count, options)
    if key not in _SUITES:  # a suite is fixed by its digits, count and seed (0), so it is rendered once
        _SUITES[key] = read_suite(render_suite(val.images, val.labels, count), options)
    suite = suite_accuracy(model, _SUITES[key])
    gap = val_accuracy - suite["overall"]
    conditions = suite["conditions"]
    worst = sorted(conditions, key=conditions.__getitem__)[:3]
    evidence = {"val_accuracy": val_accuracy, "real_world": suite["overall"], "gap": gap, "conditions": conditions}
    draw = lambda: pictures.real_world(val_accuracy, conditions)  # noqa: E731
    said = ", ".join(f"{name} {conditions[name]:.0%}" for name in worst)
    # a few dozen pictures measure the suite loosely: the gap must also stand out of its own noise
    noise = 2 * math.sqrt(max(suite["overall"] * (1 - suite["overall"]), 1e-6) / max(suite["images"], 1))
    if gap > max(REAL_WORLD_GAP, noise):
        return Finding(
            "real-world-gap",
            "warning",
            f"Real-world pictures read {gap:.1%} worse than validation digits ({suite['overall']:.1%} of "
            f"{suite['images']} against {val_accuracy:.1%}); worst: {said}",
            evidence,
            f"augmentation for pen, slant and position: {commands.train(augment=True)}",
            draw,
        )
    return Finding(
        "real-world-gap",
        "info",
        f"Real-world suite {suite['overall']:.1%} of {suite['images']} pictures against validation "
        f"{val_accuracy:.1%}; worst: {said}",
        evidence,
        draw=draw,
    )
