"""The model that comes inside the package, so `digitlab predict photo.jpg` works without a run of one's own.

It is a `cnn --recipe robust` run trained by digitlab itself (`python benchmarks/ship_model.py`),
written as one self-describing model file: weights stored as float16 (half the size; loaded back
as float32), the resolved config, the dataset's checksums, its preprocessing and its headline
metrics in the metadata.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import RunError
from ..inference.explain import STEPS, Explanation
from ..inference.predict import Prediction
from .run import Run, load_run, save_model

SHIPPED_MODEL = Path(__file__).parents[1] / "weights" / "digitlab-cnn-robust.safetensors"


def load_shipped(device: str | torch.device = "cpu") -> Run:
    """The shipped model as a Run (no folder); RunError if this installation lacks the file."""
    if not SHIPPED_MODEL.is_file():
        raise RunError(f"the model shipped with digitlab is missing ({SHIPPED_MODEL}); pass a run folder instead")
    return load_run(SHIPPED_MODEL, device)


def resolve_run(run: Run | str | Path | None, device: str | torch.device = "cpu") -> Run:
    """`run` itself, the run folder or model file it names, or the shipped model when it is None."""
    if run is None:
        return load_shipped(device)
    return run if isinstance(run, Run) else load_run(run, device)


def predict(
    images,
    run: Run | str | Path | None = None,
    top_k: int = 1,
    errors: str = "raise",
    device: str | torch.device = "cpu",
) -> list[Prediction]:
    """Classify pictures of digits (paths, folders, PIL images, arrays) with `run`, or the shipped model;
    a run given by its folder or file is loaded onto `device`."""
    return resolve_run(run, device).predict(images, top_k=top_k, errors=errors)


def explain(picture, run: Run | str | Path | None = None, targets=(), steps: int = STEPS) -> Explanation:
    """What `run` (or the shipped model) computes inside for one picture of a digit: see Run.explain."""
    return resolve_run(run).explain(picture, targets, steps)


def ship(run: Run, path: Path = SHIPPED_MODEL, metrics: dict | None = None) -> Path:
    """Write `run` as a shipped model file: float16 weights, config, dataset, preprocessing and `metrics`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = {"name": run.dataset, "sha256": run.dataset_sha256, "classes": list(run.classes)}
    save_model(
        run.model,
        path,
        dtype=torch.float16,
        dataset=dataset,
        config=run.config.to_dict(),
        preprocess=run.preprocess.to_dict(),
        metrics=metrics or {},
    )
    return path
