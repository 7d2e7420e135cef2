"""Evaluation: logits for a split, and the metrics a person reads (accuracy, per-class scores, confusion)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, to_float


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Logits (N, C) for uint8 images (N, 1, 28, 28), computed in eval mode on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        chunks = [model(to_float(images[start:start + batch_size].to(device)))
                  for start in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks).float().cpu() if chunks else torch.empty(0, 0)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (C, C): row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]) -> dict:
    """Accuracy, mean cross-entropy, per-class precision/recall/F1 and the confusion matrix, as plain Python."""
    labels = labels.cpu()
    predicted = logits.argmax(1)
    confusion = confusion_matrix(predicted, labels, len(classes)).double()
    hits = confusion.diag()
    precision = hits / confusion.sum(0).clamp(min=1)
    recall = hits / confusion.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    per_class = [
        {"class": name, "precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(classes, precision.tolist(), recall.tolist(), f1.tolist(), confusion.sum(1).tolist())
    ]
    return {
        "accuracy": (predicted == labels).double().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "macro_f1": f1.mean().item(),
        "per_class": per_class,
        "confusion_matrix": confusion.long().tolist(),
        "count": int(labels.shape[0]),
    }


def evaluate(model: nn.Module, split: Split, classes: tuple[str, ...] = tuple("0123456789")) -> dict:
    """Metrics of `model` on `split` (see classification_metrics)."""
    return classification_metrics(predict_logits(model, split.images), split.labels, classes)


def accuracy(model: nn.Module, split: Split) -> float:
    return (predict_logits(model, split.images).argmax(1) == split.labels.cpu()).double().mean().item()


# Fixed transforms of the test set: (name, rotation in degrees, shift (x, y) in pixels, scale).
ROBUSTNESS_TRANSFORMS = (
    ("rotate -30°", -30, (0, 0), 1.0), ("rotate -15°", -15, (0, 0), 1.0),
    ("rotate +15°", 15, (0, 0), 1.0), ("rotate +30°", 30, (0, 0), 1.0),
    ("shift -3 px", 0, (-3, -3), 1.0), ("shift +3 px", 0, (3, 3), 1.0),
    ("scale 0.8", 0, (0, 0), 0.8),
)


@torch.no_grad()
def robustness(model: nn.Module, split: Split, batch_size: int = 2000) -> dict[str, float]:
    """Accuracy on the clean split and on each fixed transform of it (ROBUSTNESS_TRANSFORMS).

    Shifts move the digit diagonally by the given pixels on both axes.
    """
    from .augment import transform_batch

    device = next(model.parameters()).device
    labels = split.labels.cpu()
    results = {"clean": accuracy(model, split)}
    was_training = model.training
    model.eval()
    try:
        for name, degrees, shift, scale in ROBUSTNESS_TRANSFORMS:
            predicted = []
            for start in range(0, len(split), batch_size):
                images = to_float(split.images[start:start + batch_size].to(device))
                predicted.append(model(transform_batch(images, degrees, shift, scale)).argmax(1).cpu())
            results[name] = (torch.cat(predicted) == labels).double().mean().item()
    finally:
        model.train(was_training)
    return results
