"""Finding label errors: flip 200 training labels at random, then see how many of them the doctor's
cross-validated suspects (digitlab.doctor.label_suspects, the engine of `digitlab doctor data`) put at
the top.

The flips are drawn with a seeded generator (each flipped label becomes a different class, uniformly);
nothing else is known to the search: no list of MNIST's own errors, no index. Precision at k counts
every suspect that is not a flip as a miss, MNIST's own mislabelled digits included. Goal: at least
90% of the flips among the top 300 suspects.

    python benchmarks/label_errors.py [--flips 200] [--folds 4] [--epochs 2] [--seed 0] [--out FILE]

Results go to benchmarks/results/label_errors.json (or --out); the exit code is 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

import digitlab
from common import write_result
from digitlab.data.datasets import Split
from digitlab.doctor.labels import CROSS_VALIDATION, label_suspects

TOPS = (100, 300, 1000)
GOAL_TOP, GOAL_RECALL = 300, 0.9


def flipped(data: digitlab.Dataset, count: int, seed: int) -> tuple[digitlab.Dataset, set[int]]:
    """`data` with `count` random training labels changed to another class, and the flipped positions."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randperm(len(data.train), generator=generator)[:count]
    labels = data.train.labels.clone()
    shift = torch.randint(1, len(data.classes), (count,), generator=generator)
    labels[positions] = (labels[positions] + shift) % len(data.classes)
    return dataclasses.replace(data, train=Split(data.train.images, labels)), set(positions.tolist())


def scores_at(suspects: list, flips: set[int]) -> dict:
    """Recall (share of the flips found) and precision (share of suspects that are flips) in each top k."""
    hits = [suspect.split == "train" and suspect.index in flips for suspect in suspects]
    result = {}
    for top in TOPS:
        found = sum(hits[:top])
        shown = min(top, len(suspects))
        result[str(top)] = {"recall": found / len(flips), "precision": found / shown if shown else None, "flips": found}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=200)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=CROSS_VALIDATION.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = digitlab.load_dataset("mnist", val_size=0, download=False)
    noisy, flips = flipped(data, args.flips, args.seed)
    config = CROSS_VALIDATION.replace(epochs=args.epochs, device="cpu")
    started = time.perf_counter()
    folds: list[float] = []
    suspects = label_suspects(noisy, config, args.folds, args.seed, lambda fold, took: folds.append(took))
    seconds = time.perf_counter() - started
    at = scores_at(suspects, flips)
    result = {
        "flips": args.flips,
        "seed": args.seed,
        "folds": args.folds,
        "model": config.model,
        "epochs": config.epochs,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "fold_seconds": folds,
        "suspects": len(suspects),
        "at": at,
        "goal": {"top": GOAL_TOP, "recall": GOAL_RECALL, "met": at[str(GOAL_TOP)]["recall"] >= GOAL_RECALL},
    }
    path = write_result("label_errors", result, args.out)
    for top, score in at.items():
        print(f"top {top}: recall {score['recall']:.1%}, precision {score['precision']:.1%}")
    print(f"{len(suspects)} suspects in {seconds:.0f} s; written to {path}")
    return 0 if result["goal"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
