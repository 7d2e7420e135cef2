"""Hyper-parameter tuning with Optuna: the search space, shared studies (SQLite or PostgreSQL) and the
study's outputs. `digitlab.tune` is the function that runs a study.
"""

from .space import build_space, read_space_file
from .study import open_study
from .tune import base_config

__all__ = [
    "base_config",
    "build_space",
    "open_study",
    "read_space_file",
]
