"""Run folders and what is read from them: the `Run`, self-describing model files, checkpoints, the shipped
model, reports, comparisons, run tables and ensembles.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .compare import Comparison
from .ensemble import build_ensemble
from .report import write_report
from .run import Run, evaluate_real_world, evaluate_run, load_model, load_run, save_model
from .shipped import SHIPPED_MODEL, load_shipped
from .table import list_runs

__all__ = [
    "SHIPPED_MODEL",
    "Comparison",
    "Run",
    "build_ensemble",
    "evaluate_real_world",
    "evaluate_run",
    "list_runs",
    "load_checkpoint",
    "load_model",
    "load_run",
    "load_shipped",
    "save_checkpoint",
    "save_model",
    "write_report",
]
