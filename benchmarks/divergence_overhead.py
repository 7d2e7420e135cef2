"""What watching for divergence costs: seconds per epoch with the loss watch on and off, per engine.

The watch (digitlab.training.divergence) recomputes each window's cross-entropy from the logits the engine
already keeps and reads it once per 50 steps. This times one epoch of the seed MLP (batch 64, the
recipe where per-step overhead matters most) on each engine, alternating watched and unwatched
epochs so that machine noise hits both alike, and reports the median of each and the overhead.

    python benchmarks/divergence_overhead.py [--rounds 7] [--train-size N] [--out FILE]

Results go to benchmarks/results/divergence_overhead.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from pathlib import Path
from unittest import mock

import digitlab
from common import write_result
from digitlab.training.divergence import LossWatch


def epoch_seconds(data: digitlab.Dataset, engine: str, watched: bool, train_size: int) -> float:
    config = digitlab.TrainConfig(epochs=1, engine=engine, threads=1, train_size=train_size)
    unwatched = mock.patch.object(LossWatch, "see", lambda self, *step: None)
    with contextlib.nullcontext() if watched else unwatched:
        run = digitlab.train(config, dataset=data, save=False, test=False)
    return run.metrics["history"][0]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--train-size", type=int, default=0, help="0 = all 55,000 training images")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = digitlab.load_dataset("mnist")
    result: dict = {"rounds": args.rounds, "train_size": args.train_size or len(data.train), "engines": {}}
    for engine in ("fused", "autograd"):
        times: dict[str, list[float]] = {"watched": [], "unwatched": []}
        epoch_seconds(data, engine, True, args.train_size)  # warm-up
        for _ in range(args.rounds):
            for mode in ("watched", "unwatched"):
                times[mode].append(epoch_seconds(data, engine, mode == "watched", args.train_size))
        watched, unwatched = statistics.median(times["watched"]), statistics.median(times["unwatched"])
        result["engines"][engine] = {
            "median_seconds_watched": watched,
            "median_seconds_unwatched": unwatched,
            "overhead_percent": 100 * (watched / unwatched - 1),
            "seconds": times,
        }
        print(
            f"{engine}: {watched:.3f} s watched, {unwatched:.3f} s unwatched ({100 * (watched / unwatched - 1):+.1f}%)"
        )
    print(f"written to {write_result('divergence_overhead', result, args.out)}")


if __name__ == "__main__":
    main()
