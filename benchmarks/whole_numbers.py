"""Reading whole numbers: 1,000 numbers of 2-8 MNIST digits composed on paper, read with a run's model.

(Not named numbers.py: a script's folder comes first on sys.path, and numpy imports the standard
library's `numbers`, which would then be this file.)

Half the numbers have clean spacing (gaps of 12-50% of the digits' size), half have touching or
overlapping neighbours (gaps of -12% to +2%); sizes, baselines, paper, ink and noise vary
(digitlab.inference.numbers.compose_number). The digits come from the TEST split with a fixed seed; `--part val`
composes them from validation digits instead, which is where segmentation thresholds are tuned.

    python benchmarks/whole_numbers.py [RUN] [--count 1000] [--part test]

writes benchmarks/results/numbers.json (only for the test part) and prints a table.
Goal: >= 97% of the numbers read exactly (every digit right), and on clean spacing no digit
dropped or invented. Exit 1 if the goal is missed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import write_result
from digitlab.inference.numbers import compose_number
from digitlab.runs.shipped import resolve_run

GOAL = 0.97


def compose(split, count: int, seed: int) -> list[tuple[np.ndarray, str, bool]]:
    """`count` (page, true number, touching) triples; every second number has touching neighbours."""
    rng = np.random.default_rng(seed)
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    numbers = []
    for number in range(count):
        picks = rng.integers(0, len(labels), int(rng.integers(2, 9)))
        touching = number % 2 == 1
        page, _ = compose_number(images[picks], rng, touching=touching)
        numbers.append((page, "".join(str(label) for label in labels[picks]), touching))
    return numbers


def score(readings, numbers) -> dict:
    """Exact-read rates (all, clean, touching), digits dropped and invented, and per-digit accuracy where
    the count of digits came out right."""
    rows = {"all": [], "clean": [], "touching": []}
    for reading, (_, truth, touching) in zip(readings, numbers, strict=False):
        found = reading.number if reading.ok else ""
        row = (
            found == truth,
            max(0, len(truth) - len(found)),
            max(0, len(found) - len(truth)),
            sum(a == b for a, b in zip(found, truth, strict=False)) if len(found) == len(truth) else None,
            len(truth),
        )
        rows["all"].append(row)
        rows["touching" if touching else "clean"].append(row)
    return {name: _summary(part) for name, part in rows.items()}


def _summary(rows) -> dict:
    counted = [row for row in rows if row[3] is not None]
    return {
        "numbers": len(rows),
        "exact": sum(row[0] for row in rows) / len(rows),
        "dropped": sum(row[1] for row in rows),
        "invented": sum(row[2] for row in rows),
        "digit_accuracy": sum(row[3] for row in counted) / max(1, sum(row[4] for row in counted)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("run", nargs="?", default=None, help="run folder or model file (default: the shipped model)")
    parser.add_argument("--count", type=int, default=1000, help="numbers to compose")
    parser.add_argument("--part", choices=("test", "val"), default="test", help="digits to compose from")
    parser.add_argument("--seed", type=int, default=0, help="seed of the composition")
    args = parser.parse_args()
    run = resolve_run(args.run)
    split = run.data("composed").splits()[args.part]
    numbers = compose(split, args.count, args.seed)
    started = time.perf_counter()
    readings = run.read_number([page for page, _, _ in numbers], errors="collect")  # as `predict --number` reads
    seconds = time.perf_counter() - started
    scores = score(readings, numbers)
    print(f"{'numbers':>10} {'count':>6} {'exact':>8} {'digits':>8} {'dropped':>8} {'invented':>9}")
    for name, row in scores.items():
        print(
            f"{name:>10} {row['numbers']:6d} {row['exact']:8.2%} {row['digit_accuracy']:8.2%} "
            f"{row['dropped']:8d} {row['invented']:9d}"
        )
    print(f"{len(numbers) / seconds:.1f} numbers per second ({run.path})")
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
                "images_per_second": len(numbers) / seconds,
                **scores,
            },
        )
        print(f"wrote {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
