"""digitlab: train, evaluate, explain and serve MNIST-like digit classifiers with PyTorch."""

from . import tracking as tracking  # importing it registers the experiment trackers that config.log names
from .config import TrainConfig
from .data.datasets import Dataset, Split, list_datasets, load_dataset, read_idx
from .errors import ConfigError, DataError, DigitlabError, DivergenceError, ExportError, ImageError, RunError
from .export.web import export_web
from .models.nets import create_model, list_models, register_model
from .runs.compare import Comparison, compare
from .runs.run import Run, evaluate_real_world, load_model, load_run

# Last, so the functions (not the submodules of the same names) are what `digitlab.evaluate` and
# `digitlab.predict` name.
from .runs.run import evaluate_run as evaluate
from .runs.shipped import explain, predict
from .runs.table import list_runs
from .training.train import Tracking, Trainee, fit, resume, train
from .tuning.tune import tune
from .version import __version__

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
