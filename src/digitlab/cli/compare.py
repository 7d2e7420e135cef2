"""Commands over many runs: `runs` lists them as a table, `compare` sets some side by side."""

from __future__ import annotations

import json

from .common import Names


def add_parsers(commands) -> None:
    listing = commands.add_parser("runs", help="list the runs in a folder: model, recipe, epochs, accuracy, time, date")
    listing.add_argument("folder", nargs="?", default="runs", help="folder of run folders, searched at any depth")
    listing.add_argument(
        "--sort",
        choices=Names(_sort_keys),
        metavar="COLUMN",
        default="date",
        help="column to sort by: %(choices)s (accuracies best first, others ascending)",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    listing.set_defaults(handler=cmd_runs)

    compare = commands.add_parser(
        "compare",
        help="compare runs: config differences, training curves, per-class accuracy, and the test digits "
        "one run gets right and another wrong (an HTML page, and a table here)",
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders")
    compare.add_argument("--out", metavar="FILE", help="the HTML page (default comparisons/<run>-vs-<run>-<time>.html)")
    compare.set_defaults(handler=cmd_compare)


def cmd_runs(args) -> int:
    from ..runs.table import format_table, list_runs

    rows = list_runs(args.folder, args.sort)
    if args.json:
        print(json.dumps(rows))
    elif rows:
        print(format_table(rows))
    else:
        print(f"no runs in {args.folder}")
    return 0


def cmd_compare(args) -> int:
    from ..runs.compare import compare

    comparison = compare(args.runs, out=args.out)
    print(comparison.table())
    print(f"\ncomparison written to {comparison.path}")
    return 0


def _sort_keys() -> tuple[str, ...]:
    from ..runs.table import SORT_KEYS

    return SORT_KEYS
