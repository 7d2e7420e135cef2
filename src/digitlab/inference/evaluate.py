"""Evaluation: logits for a split, and the metrics a person reads (accuracy, per-class scores, confusion)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import Split, to_float


@contextmanager
def one_thread() -> Iterator[None]:
    """One CPU thread for a while. The BLAS library may otherwise use fewer threads than asked on a busy
    machine, which changes the order of its sums and so a result's last bits (the out-of-distribution
    detector); and work split in small pieces (a line of digits, a number's few digits) runs several
    times faster on one thread than on two that wait on each other on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 2000,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits (N, C) for uint8 images (N, 1, 28, 28), computed in eval mode on the model's device;
    `transform`, if given, maps each batch of float images before the model sees it."""
    device = next(model.parameters()).device
    transform = transform or (lambda batch: batch)
    was_training = model.training
    model.eval()
    try:
        chunks = [
            model(transform(to_float(images[start : start + batch_size].to(device))))
            for start in range(0, images.shape[0], batch_size)
        ]
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
        for name, p, r, f, s in zip(
            classes, precision.tolist(), recall.tolist(), f1.tolist(), confusion.sum(1).tolist(), strict=True
        )
    ]
    return {
        "accuracy": (predicted == labels).double().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "macro_f1": f1.mean().item(),
        "per_class": per_class,
        "confusion_matrix": confusion.long().tolist(),
        "count": int(labels.shape[0]),
    }


def evaluate(model: nn.Module, split: Split, classes: tuple[str, ...] = tuple("0123456789"), tta: bool = False) -> dict:
    """Metrics of `model` on `split` (see classification_metrics); with `tta`, of its test-time-augmented
    predictions (TestTimeAugmented)."""
    model = TestTimeAugmented(model) if tta else model
    return classification_metrics(predict_logits(model, split.images), split.labels, classes)


# Test-time augmentation's views of each digit: (rotation in degrees, shift (x, y) in pixels). Small
# shifts and rotations keep a digit's label (MNIST's own digits vary that much); flips never appear,
# since a mirrored digit is another symbol or none (2 and 5, 6 and 9 under a turn by 180°).
TTA_VIEWS = ((0, (0, 0)), (0, (1, 0)), (0, (-1, 0)), (0, (0, 1)), (0, (0, -1)), (-8, (0, 0)), (8, (0, 0)))


class TestTimeAugmented(nn.Module):
    """`model` applied to several label-preserving views of each digit (TTA_VIEWS) whose probabilities
    are averaged: forward returns log(mean probability), (B, C), so argmax and softmax read it as logits.
    The views cost one forward pass each."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, model: nn.Module, views=TTA_VIEWS):
        super().__init__()
        self.model, self.views = model, tuple(views)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from ..data.augment import transform_batch

        per_view = [
            self.model(transform_batch(images, rotate=degrees, shift=shift) if degrees or any(shift) else images)
            .float()
            .log_softmax(1)
            for degrees, shift in self.views
        ]
        return torch.stack(per_view).logsumexp(0) - math.log(len(per_view))


def accuracy(model: nn.Module, split: Split) -> float:
    return (predict_logits(model, split.images).argmax(1) == split.labels.cpu()).double().mean().item()


# Fixed transforms of the test set: (name, rotation in degrees, shift (x, y) in pixels, scale).
ROBUSTNESS_TRANSFORMS = (
    ("rotate -30°", -30, (0, 0), 1.0),
    ("rotate -15°", -15, (0, 0), 1.0),
    ("rotate +15°", 15, (0, 0), 1.0),
    ("rotate +30°", 30, (0, 0), 1.0),
    ("shift -3 px", 0, (-3, -3), 1.0),
    ("shift +3 px", 0, (3, 3), 1.0),
    ("scale 0.8", 0, (0, 0), 0.8),
)


def robustness(model: nn.Module, split: Split) -> dict[str, float]:
    """Accuracy on the clean split and on each fixed transform of it (ROBUSTNESS_TRANSFORMS).

    Shifts move the digit diagonally by the given pixels on both axes.
    """
    from ..data.augment import transform_batch

    labels = split.labels.cpu()
    results = {"clean": accuracy(model, split)}
    for name, degrees, shift, scale in ROBUSTNESS_TRANSFORMS:
        transform = partial(transform_batch, rotate=degrees, shift=shift, scale=scale)
        logits = predict_logits(model, split.images, transform=transform)
        results[name] = (logits.argmax(1) == labels).double().mean().item()
    return results


def calibration(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """Expected calibration error and the reliability bins of the top-class confidence.

    `probabilities` (N, C) rows sum to one. The confidence of a prediction is its max probability;
    it falls in one of `bins` equal-width bins (lower, upper] over [0, 1]. The ECE is the
    count-weighted mean over bins of |accuracy - mean confidence|. Each bin is reported as
    {lower, upper, count, confidence, accuracy}; the last two are None for an empty bin.
    """
    confidence, predicted = probabilities.double().max(1)
    correct = (predicted == labels.to(predicted.device)).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence.cpu(), edges[1:-1])  # boundaries[i-1] < x <= boundaries[i]
    count = torch.bincount(which, minlength=bins).double()
    confidence_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, confidence.cpu())
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct.cpu())
    gap = (correct_sum - confidence_sum).abs()  # n_b * |acc_b - conf_b|
    total = max(int(labels.shape[0]), 1)
    rows = [
        {
            "lower": lower,
            "upper": upper,
            "count": int(n),
            "confidence": conf / n if n else None,
            "accuracy": hits / n if n else None,
        }
        for lower, upper, n, conf, hits in zip(
            edges[:-1].tolist(),
            edges[1:].tolist(),
            count.tolist(),
            confidence_sum.tolist(),
            correct_sum.tolist(),
            strict=True,
        )
    ]
    return {"ece": gap.sum().item() / total, "bins": rows}


def confident_mistakes(probabilities: torch.Tensor, labels: torch.Tensor, threshold: float = 0.8) -> torch.Tensor:
    """Indices of wrong predictions whose max probability exceeds `threshold`, most confident first."""
    confidence, predicted = probabilities.max(1)
    index = ((predicted != labels) & (confidence > threshold)).nonzero().squeeze(1)
    return index[torch.argsort(confidence[index], descending=True, stable=True)]


def uncertain_predictions(probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Indices (in order) of predictions whose max probability is below `threshold`."""
    return (probabilities.max(1).values < threshold).nonzero().squeeze(1)


def misclassified(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Indices (in order) of wrong predictions."""
    return (probabilities.argmax(1) != labels).nonzero().squeeze(1)


def most_confused_pairs(confusion: torch.Tensor, top: int = 5) -> list[tuple[int, int, int]]:
    """The `top` off-diagonal (true, predicted, count) cells of a confusion matrix, largest count first."""
    off_diagonal = confusion.clone().fill_diagonal_(0).flatten()
    order = torch.argsort(off_diagonal, descending=True, stable=True)[:top]
    classes = confusion.shape[0]
    return [
        (int(cell) // classes, int(cell) % classes, int(off_diagonal[cell])) for cell in order if off_diagonal[cell] > 0
    ]
