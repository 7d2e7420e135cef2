"""digitlab: train, evaluate, explain and serve MNIST-like digit classifiers with PyTorch.

The public names are imported on first use (digitlab.faces), so `import digitlab.cli` or
`import digitlab.errors` does not load torch, matplotlib and the trackers before anything is asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .faces import lazy_face
from .version import __version__

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data.datasets import Dataset, Split, list_datasets, load_dataset, read_idx
    from .errors import ConfigError, DataError, DigitlabError, DivergenceError, ExportError, ImageError, RunError
    from .export.web import export_web
    from .models.nets import create_model, list_models, register_model
    from .runs.compare import Comparison, compare
    from .runs.run import Run, evaluate_real_world, load_model, load_run
    from .runs.run import evaluate_run as evaluate
    from .runs.shipped import explain, predict
    from .runs.table import list_runs
    from .training.train import Tracking, Trainee, fit, resume, train
    from .tuning.tune import tune

_ERRORS = ("ConfigError", "DataError", "DigitlabError", "DivergenceError", "ExportError", "ImageError", "RunError")

# `evaluate` and `predict` name the functions, not the inference modules of the same names.
__getattr__, __dir__ = lazy_face(
    __name__,
    {
        "TrainConfig": ".config",
        **{name: ".data.datasets" for name in ("Dataset", "Split", "list_datasets", "load_dataset", "read_idx")},
        **{name: ".errors" for name in _ERRORS},
        "export_web": ".export.web",
        **{name: ".models.nets" for name in ("create_model", "list_models", "register_model")},
        **{name: ".runs.compare" for name in ("Comparison", "compare")},
        **{name: ".runs.run" for name in ("Run", "evaluate_real_world", "load_model", "load_run")},
        "evaluate": ".runs.run:evaluate_run",
        **{name: ".runs.shipped" for name in ("explain", "predict")},
        "list_runs": ".runs.table",
        **{name: ".training.train" for name in ("Tracking", "Trainee", "fit", "resume", "train")},
        "tune": ".tuning.tune",
    },
)

__all__ = [
    "Comparison",
    "ConfigError",
    "DataError",
    "Dataset",
    "DigitlabError",
    "DivergenceError",
    "ExportError",
    "ImageError",
    "Run",
    "RunError",
    "Split",
    "Tracking",
    "TrainConfig",
    "Trainee",
    "__version__",
    "compare",
    "create_model",
    "evaluate",
    "evaluate_real_world",
    "explain",
    "export_web",
    "fit",
    "list_datasets",
    "list_models",
    "list_runs",
    "load_dataset",
    "load_model",
    "load_run",
    "predict",
    "read_idx",
    "register_model",
    "resume",
    "train",
    "tune",
]
