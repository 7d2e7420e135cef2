"""Training: the fit loop (`train`), its epoch steps and engines, recipes, the divergence watch, distributed
runs and augmentation studies. `digitlab.train` is the function that trains a config.
"""

from .recipes import RECIPES, apply_recipe, list_recipes
from .train import Tracking, Trainee, fit, resume

__all__ = [
    "RECIPES",
    "Tracking",
    "Trainee",
    "apply_recipe",
    "fit",
    "list_recipes",
    "resume",
]
