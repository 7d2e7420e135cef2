"""Run folders and what is read from them: the `Run`, self-describing model files, checkpoints, the shipped
model, reports, comparisons, run tables and ensembles.

The names below are imported on first use (digitlab.faces), so loading a run to predict does not load the
report's and comparison's matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..faces import lazy_face

if TYPE_CHECKING:
    from .batch import RunReader, read_with_ray
    from .checkpoint import load_checkpoint, save_checkpoint
    from .compare import Comparison
    from .ensemble import build_ensemble
    from .report import write_report
    from .run import Run, evaluate_real_world, evaluate_run, load_model, load_run, save_model
    from .shipped import SHIPPED_MODEL, load_shipped
    from .table import list_runs

__getattr__, __dir__ = lazy_face(
    __name__,
    {
        "RunReader": ".batch",
        "read_with_ray": ".batch",
        "load_checkpoint": ".checkpoint",
        "save_checkpoint": ".checkpoint",
        "Comparison": ".compare",
        "build_ensemble": ".ensemble",
        "write_report": ".report",
        **{name: ".run" for name in ("Run", "evaluate_real_world", "evaluate_run", "load_model", "load_run")},
        "save_model": ".run",
        "SHIPPED_MODEL": ".shipped",
        "load_shipped": ".shipped",
        "list_runs": ".table",
    },
)

__all__ = [
    "SHIPPED_MODEL",
    "Comparison",
    "Run",
    "RunReader",
    "build_ensemble",
    "evaluate_real_world",
    "evaluate_run",
    "list_runs",
    "load_checkpoint",
    "load_model",
    "load_run",
    "load_shipped",
    "read_with_ray",
    "save_checkpoint",
    "save_model",
    "write_report",
]
