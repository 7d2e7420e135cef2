"""Reading whole numbers: 1,000 numbers of 2-8 MNIST digits composed on paper, read with a run's model.

(Not named numbers.py: a script's folder comes first on sys.path, and numpy imports the standard
library's `numbers`, which would then be this file.)

Half the numbers have clean spacing (gaps of 12-50% of the digits' size), half have touching or
overlapping neighbours (gaps of -12% to +2%); sizes, baselines, paper, ink and noise vary
(digitlab.inference.numbers.compose_number). The digits come from the TEST split with a fixed seed; `--part val`
composes them from validation digits instead, which is where segmentation thresholds are tuned.

    python benchmarks/whole_numbers.py [RUN] [--count 1000] [--part test] [--reader line] [--baseline]

`--reader` picks how the digits are found (Run.read_number: the line reader, the default, or the
segmenter); `--baseline` reads the same numbers the other way too and records its figures and the
speed ratio, measured side by side in the one run (with the 1-minute load average before each).

writes benchmarks/results/numbers.json (only for the test part) and prints a table.
Goal: >= 97% of the numbers read exactly (every digit right), and on clean spacing no digit
dropped or invented. Exit 1 if the goal is missed.

A digit is matched to the reading by where it lies, never by the length of the answer: each digit
read goes to the true digit whose ink box it overlaps most. A true digit that nothing was read on is
dropped; a digit read on no true digit, or a second one read on the same true digit, is invented. So
a number that loses one digit and gains another counts one of each (netting the lengths would count
none). Throughput is numbers read exactly per second; wrong readings and refusals are their own figures.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import write_result
from digitlab.inference.numbers import compose_number
from digitlab.runs.shipped import resolve_run

GOAL = 0.97


def compose(split, count: int, seed: int) -> list[tuple[np.ndarray, str, bool, list]]:
    """`count` (page, true number, touching, true boxes) tuples; every second number has touching neighbours."""
    rng = np.random.default_rng(seed)
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    numbers = []
    for number in range(count):
        picks = rng.integers(0, len(labels), int(rng.integers(2, 9)))
        touching = number % 2 == 1
        page, boxes = compose_number(images[picks], rng, touching=touching)
        numbers.append((page, "".join(str(label) for label in labels[picks]), touching, boxes))
    return numbers


def overlap(a, b) -> int:
    """Pixels shared by two boxes (x0, y0, x1, y1)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0, width) * max(0, height)


def match(read: list[tuple[str, tuple]], truth: str, boxes: list) -> dict:
    """Digits read (label, box) against the true digits and their boxes: right, wrong, dropped, invented."""
    on = [[] for _ in truth]  # the labels read on each true digit
    invented = 0
    for label, box in read:
        shared = [overlap(box, true_box) for true_box in boxes]
        if max(shared) == 0:
            invented += 1
        else:
            on[shared.index(max(shared))].append(label)
    right = sum(len(labels) == 1 and labels[0] == digit for labels, digit in zip(on, truth, strict=True))
    return {
        "right": right,
        "wrong": sum(len(labels) == 1 for labels in on) - right,
        "dropped": sum(not labels for labels in on),
        "invented": invented + sum(max(0, len(labels) - 1) for labels in on),
    }


def score(readings, numbers) -> dict:
    """Exact-read rates (all, clean, touching), digits dropped and invented (each counted, not netted),
    refusals, and per-digit accuracy where the count of digits came out right."""
    rows = {"all": [], "clean": [], "touching": []}
    for reading, (_, truth, touching, boxes) in zip(readings, numbers, strict=True):
        found = reading.number if reading.ok else ""
        read = [(digit.label, digit.box) for digit in reading.digits] if reading.ok else []
        row = {
            "exact": found == truth,
            "refused": not reading.ok,
            **match(read, truth, boxes),
            "same_count": sum(a == b for a, b in zip(found, truth, strict=True)) if len(found) == len(truth) else None,
            "digits": len(truth),
        }
        rows["all"].append(row)
        rows["touching" if touching else "clean"].append(row)
    return {name: _summary(part) for name, part in rows.items()}


def _summary(rows) -> dict:
    counted = [row for row in rows if row["same_count"] is not None]
    return {
        "numbers": len(rows),
        "exact": sum(row["exact"] for row in rows) / len(rows),
        "wrong_numbers": sum(not row["exact"] and not row["refused"] for row in rows),
        "refused": sum(row["refused"] for row in rows),
        "dropped": sum(row["dropped"] for row in rows),
        "invented": sum(row["invented"] for row in rows),
        "misread_digits": sum(row["wrong"] for row in rows),
        "digit_accuracy": sum(row["same_count"] for row in counted) / max(1, sum(row["digits"] for row in counted)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("run", nargs="?", default=None, help="run folder or model file (default: the shipped model)")
    parser.add_argument("--count", type=int, default=1000, help="numbers to compose")
    parser.add_argument("--part", choices=("test", "val"), default="test", help="digits to compose from")
    parser.add_argument("--seed", type=int, default=0, help="seed of the composition")
    parser.add_argument("--reader", choices=("line", "segmenter"), default="line", help="how digits are found")
    parser.add_argument("--baseline", action="store_true", help="also read the numbers the other way, side by side")
    args = parser.parse_args()
    run = resolve_run(args.run)
    split = run.data("composed").splits()[args.part]
    numbers = compose(split, args.count, args.seed)
    load, started = os.getloadavg()[0], time.perf_counter()
    readings = run.read_number([page for page, *_ in numbers], errors="collect", reader=args.reader)
    seconds = time.perf_counter() - started
    scores = score(readings, numbers)
    print(f"{'numbers':>10} {'count':>6} {'exact':>8} {'digits':>8} {'dropped':>8} {'invented':>9} {'refused':>8}")
    for name, row in scores.items():
        print(
            f"{name:>10} {row['numbers']:6d} {row['exact']:8.2%} {row['digit_accuracy']:8.2%} "
            f"{row['dropped']:8d} {row['invented']:9d} {row['refused']:8d}"
        )
    exact_per_second = round(scores["all"]["exact"] * len(numbers)) / seconds
    print(f"{exact_per_second:.2f} numbers read exactly per second ({run.path}, {args.reader})")
    baseline = {}
    if args.baseline:
        other = next(reader for reader in ("line", "segmenter") if reader != args.reader)
        other_load, started = os.getloadavg()[0], time.perf_counter()
        other_readings = run.read_number([page for page, *_ in numbers], errors="collect", reader=other)
        other_seconds = time.perf_counter() - started
        other_scores = score(other_readings, numbers)
        baseline = {
            "baseline": {
                "reader": other,
                "seconds": other_seconds,
                "load_average_1min_before": other_load,
                **{name: {"exact": row["exact"]} for name, row in other_scores.items()},
            },
            "speedup": other_seconds / seconds,
        }
        print(
            f"{other}: {other_scores['all']['exact']:.2%} exact; {args.reader} is {other_seconds / seconds:.1f}x faster"
        )
    passed = scores["all"]["exact"] >= GOAL and scores["clean"]["dropped"] == scores["clean"]["invented"] == 0
    if args.part == "test":
        path = write_result(
            "numbers",
            {
                "run": str(run.path),
                "count": args.count,
                "seed": args.seed,
                "goal": {"exact": GOAL, "clean_dropped_invented": 0},
                "passed": passed,
                "reader": args.reader,
                "exact_per_second": exact_per_second,
                "seconds": seconds,
                "load_average_1min_before": load,
                **scores,
                **baseline,
            },
        )
        print(f"wrote {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
