"""The `digitlab` command. Only this package parses arguments; each command calls the Python API.

Each module registers its commands with `add_parsers(commands)` and gives each a `handler(args)`
that returns the exit code: train (training and --resume), evaluate (evaluate, report), predict
(predict, calibrate), export, serve, ensemble, explain, compare (listing runs and comparing them),
doctor (what is wrong with a run or a dataset, lr-find), tools (data, models, recipes, studies,
previews), tune (Optuna studies).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings

from ..errors import DigitlabError
from . import compare, doctor, ensemble, evaluate, explain, export, predict, serve, tools, train, tune
from .common import Parser


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = Parser(
        prog="digitlab",
        description="Train, evaluate and explain MNIST-like digit classifiers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (train, evaluate, predict, export, serve, ensemble, explain, compare, doctor, tools, tune):
        module.add_parsers(commands)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"digitlab: warning: {message}\n"


def _stop_on_sigint() -> None:
    """Let SIGINT raise KeyboardInterrupt even where the shell started us with it ignored (`cmd &` in a
    script), so `kill -INT` stops every command cleanly, as Ctrl-C does."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    _stop_on_sigint()
    try:
        return args.handler(args)
    except DigitlabError as error:
        print(f"digitlab: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
