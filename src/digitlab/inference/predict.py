"""Classify real pictures of digits: files, folders, PIL images or arrays, in batches.

Every input goes through `preprocess.preprocess_image` (the MNIST procedure), then the model.
One bad input never stops the others: with errors="collect" it becomes a Prediction whose
`error` says what is wrong, in its place in the input order. Pictures are decoded and preprocessed
by a small pool of threads (the decoders and most array work release the GIL); the forward pass
is batched.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..config import PreprocessOptions
from ..errors import ConfigError, ImageError
from ..files import atomic_write, make_folder
from ..images.preprocess import EncodedPicture, Preprocessed, image_files, prepare, read_picture
from .evaluate import TestTimeAugmented, predict_logits
from .ood import Rejector, detector_of, observe

WORKERS = min(4, os.cpu_count() or 1)  # threads that decode and preprocess; more only add memory


@dataclass
class Prediction:
    """One input's outcome: the class, its probability, all probabilities, or an error message.

    `source` names the input (its file path, or "image N" for the N-th in-memory one); `image` is
    the uint8 (1, 28, 28) tensor the model saw; `box` is where its ink was found in the picture,
    (x0, y0, x1, y1) in the picture's pixels; `top_k` lists (label, probability), best first.
    """

    source: str
    label: str | None = None
    index: int | None = None
    confidence: float | None = None
    probabilities: list[float] | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    image: torch.Tensor | None = field(default=None, repr=False)
    box: tuple[int, ...] | None = None
    error: str | None = None
    ood_score: float | None = None
    ood_threshold: float | None = None
    rejected: bool | None = None
    neighbours: int = 0

    @classmethod
    def of(cls, source: str, prepared: Preprocessed) -> Prediction:
        """The prediction-to-be of a prepared picture: where its ink was, and whether more stood beside it."""
        return cls(source, box=prepared.box, neighbours=prepared.neighbours)

    @property
    def rejection(self) -> str | None:
        """Why the model refuses to call this a digit, or None when it accepts it (or cannot tell)."""
        if not self.rejected:
            return None
        if self.neighbours:
            return f"not one digit: {self.neighbours + 1} digit-sized marks side by side (a number? read it as one)"
        return f"does not look like a digit (score {self.ood_score:.1f} above threshold {self.ood_threshold:.1f})"

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """The JSON form: {file, label, confidence, probabilities, top_k, box, ood_score, rejected, reason}, or
        {file, error}; ood_score and rejected are null for a model without an out-of-distribution detector."""
        if not self.ok:
            return {"file": self.source, "error": self.error}
        return {
            "file": self.source,
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "box": list(self.box) if self.box else None,
            "top_k": [{"label": label, "probability": p} for label, p in self.top_k],
            "ood_score": self.ood_score,
            "rejected": self.rejected,
            "reason": self.rejection,
        }


def predict(
    model: nn.Module,
    images,
    classes=tuple("0123456789"),
    top_k: int = 1,
    batch_size: int = 512,
    errors: str = "raise",
    options: PreprocessOptions = PreprocessOptions(),
    workers: int = WORKERS,
    progress: Callable[[int, int], None] | None = None,
    tta: bool = False,
) -> list[Prediction]:
    """Preprocess and classify `images`; one Prediction per input, in order.

    `images` is a list (or tuple) whose items are file paths, folders (their image files, by
    name), EncodedPicture (a file's bytes and name), PIL images or arrays (see preprocess_image), or one such
    item alone; a 4-D array or
    tensor (N, C, H, W) is N images. Files are read with load_image's guards. errors="raise"
    raises the first ImageError; errors="collect" puts it in that input's Prediction instead.
    `options` chooses the preprocessing steps (a run's own are in `Run.preprocess`). `workers`
    threads prepare the pictures; `progress(done, total)`, when given, hears of each one prepared.
    Probabilities are the softmax of the logits in float64, so they sum to 1. A model with an
    out-of-distribution detector (`model.ood`, see digitlab.inference.ood) also scores every input and flags
    the ones above its threshold as `rejected`, and so are pictures with digit-sized marks side by side (not
    one digit: `neighbours`); they keep their label and probabilities. With `tta`,
    labels and probabilities average the model over small shifts and rotations of each digit
    (digitlab.inference.evaluate.TTA_VIEWS); the out-of-distribution score still reads the digit as it is.
    """
    if errors not in ("raise", "collect"):
        raise ConfigError(f"errors must be 'raise' or 'collect', got {errors!r}")
    if not 1 <= top_k <= len(classes):
        raise ConfigError(f"top-k must be between 1 and {len(classes)}, got {top_k}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    inputs, results, tensors = list(_inputs(images)), [], []
    for done, (source, prepared) in enumerate(_prepared(inputs, options, workers), start=1):
        if isinstance(prepared, ImageError):
            if errors == "raise":
                raise prepared
            results.append(Prediction(source, error=prepared.problem))
        else:
            tensors.append(prepared.image)
            results.append(Prediction.of(source, prepared))
        if progress is not None:
            progress(done, len(inputs))
    if tensors:
        classify_prepared(
            model, torch.stack(tensors), [result for result in results if result.ok], classes, top_k, batch_size, tta
        )
    return results


def classify_prepared(
    model: nn.Module,
    batch: torch.Tensor,
    results: list[Prediction],
    classes=tuple("0123456789"),
    top_k: int = 1,
    batch_size: int = 512,
    tta: bool = False,
) -> list[Prediction]:
    """Classify prepared images `batch` (N, 1, 28, 28) uint8 in one forward pass per `batch_size`, filling
    `results` (N Predictions, in the same order: label, probabilities, top-k, the image and, for a model with
    a detector, the out-of-distribution verdict); returns `results`. The tail of `predict`, for callers that
    prepared the pictures themselves (the web server batches requests that arrive together). `tta`: as in predict.
    """
    logits, scores = _logits_and_scores(model, batch, batch_size)
    if tta:
        augmented = TestTimeAugmented(model)
        logits = torch.cat(
            [predict_logits(augmented, batch[start : start + batch_size]) for start in range(0, len(batch), batch_size)]
        )
    for result, image, row in zip(results, batch, logits.double().softmax(1), strict=True):
        _fill(result, image, row, classes, top_k)
    detector = detector_of(model)
    if scores is not None and detector is not None:
        _flag(results, scores, detector)
    return results


def _logits_and_scores(model: nn.Module, batch: torch.Tensor, batch_size: int):
    """Logits (N, C) and, for a model with a detector, out-of-distribution scores (N,), else None."""
    detector = detector_of(model)
    if detector is None:
        return torch.cat(
            [predict_logits(model, batch[start : start + batch_size]) for start in range(0, len(batch), batch_size)]
        ), None
    seen = observe(model, batch, batch_size)
    return seen.logits, detector.score(seen)


def _flag(results: list[Prediction], scores: torch.Tensor, detector: Rejector) -> None:
    for result, score, rejected in zip(results, scores.tolist(), detector.rejects(scores).tolist(), strict=True):
        result.ood_score, result.ood_threshold = score, detector.threshold
        result.rejected = rejected or result.neighbours > 0


def save_preprocessed(predictions: list[Prediction], folder: str | Path) -> list[Path]:
    """Write the 28×28 image each successful prediction saw as FOLDER/<stem>.png; return the paths.

    The stem is the source file's (or "image N"), with "-2", "-3"... added when two inputs share it.
    """
    folder = make_folder(Path(folder))
    written, taken = [], set()
    for result in predictions:
        if not result.ok or result.image is None:  # an unreadable input has no preprocessed picture
            continue
        stem = Path(result.source).stem
        name, count = stem, 1
        while name in taken:
            count += 1
            name = f"{stem}-{count}"
        taken.add(name)
        picture = Image.fromarray(result.image[0].numpy())
        written.append(folder / f"{name}.png")
        atomic_write(written[-1], functools.partial(picture.save, format="PNG"))
    return written


def _inputs(images):
    """Yield (source, item) per input; folders expand to their image files, or to an ImageError if none."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    for number, item in enumerate(images):
        if isinstance(item, EncodedPicture):
            yield item.name, item
        elif not isinstance(item, (str, Path)):
            yield f"image {number}", item
        elif Path(item).is_dir():
            inside = image_files(item)
            yield from ((str(path), path) for path in inside)
            if not inside:
                yield str(item), ImageError("folder holds no image files", str(item))
        else:
            yield str(item), Path(item)


def _prepared(inputs: list[tuple[str, object]], options: PreprocessOptions, workers: int):
    """Yield (source, Preprocessed or ImageError) per input, in input order, prepared by `workers` threads."""
    if workers == 1 or len(inputs) < 2:
        yield from ((source, _prepare(item, source, options)) for source, item in inputs)
        return
    pool = ThreadPoolExecutor(min(workers, len(inputs)), thread_name_prefix="digitlab-predict")
    try:  # map submits every input at once, but only `workers` pictures are decoded at a time
        yield from zip(
            (source for source, _ in inputs),
            pool.map(lambda pair: _prepare(pair[1], pair[0], options), inputs),
            strict=False,
        )
    finally:  # errors="raise" stops early: drop the pictures not yet started
        pool.shutdown(cancel_futures=True)


def _prepare(item, source: str, options: PreprocessOptions) -> Preprocessed | ImageError:
    if isinstance(item, ImageError):
        return item
    try:
        return prepare(read_picture(item), options)
    except ImageError as error:
        return error if error.source else ImageError(error.problem, source)


def _fill(result: Prediction, image: torch.Tensor, probabilities: torch.Tensor, classes, top_k: int) -> None:
    values, indices = probabilities.topk(top_k)
    result.index = int(indices[0])
    result.label = str(classes[result.index])
    result.confidence = float(values[0])
    result.probabilities = probabilities.tolist()
    result.top_k = [(str(classes[i]), float(p)) for p, i in zip(values.tolist(), indices.tolist(), strict=True)]
    result.image = image
