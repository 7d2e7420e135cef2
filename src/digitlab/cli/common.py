"""What every command module shares: the one-line-error parser and logging to stderr."""

from __future__ import annotations

import argparse
import sys


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
