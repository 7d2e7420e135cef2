"""What every command module shares: the one-line-error parser and logging to stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection, Iterator


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def log(message: str) -> None:
    print(message, file=sys.stderr)


def format_settings(settings: dict) -> str:
    """`key=value` pairs on one line: floats to 3 digits, lists comma-joined, nested dicts (model_kwargs) flattened."""
    return " ".join(
        format_settings(value) if isinstance(value, dict) else f"{key}={_format_value(value)}"
        for key, value in settings.items()
    )


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(_format_value, value))
    return str(value)


class Names:
    """The choices of an option read from a registry (models, datasets, recipes) only when argparse checks a
    value or prints the option's help, so building the parser imports no torch. Give the option a metavar
    (argparse would otherwise list the names when the option is added) and say %(choices)s in its help."""

    def __init__(self, read: Callable[[], Collection[str]]):
        self._read = read

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __contains__(self, name: object) -> bool:
        return name in self._read()


def _models() -> list[str]:
    from ..models.nets import list_models

    return list_models()


def _datasets() -> list[str]:
    from ..data.datasets import list_datasets

    return list_datasets()


def _recipes() -> list[str]:
    from ..training.recipes import list_recipes

    return list_recipes()


MODELS, DATASETS, RECIPES = Names(_models), Names(_datasets), Names(_recipes)


def add_device(parser) -> None:
    """The --device option of every command that runs a model."""
    from ..config import DEVICES

    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the model runs (default auto: cuda, then mps, then cpu)",
    )
