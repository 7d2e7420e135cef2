"""Experiment trackers: the registry training opens them from (`registry`) and the trackers themselves
(`trackers`: TensorBoard, MLflow, CSV), which register by name when this package is imported.
"""

from .registry import Tracker, Trackers, register_tracker
from .trackers import CsvLog, MlflowLog, TensorBoardLog

__all__ = [
    "CsvLog",
    "MlflowLog",
    "TensorBoardLog",
    "Tracker",
    "Trackers",
    "register_tracker",
]
