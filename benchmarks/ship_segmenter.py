"""Train the segmenter shipped inside the package (digitlab.inference.segmenter) and write it to src/digitlab/weights/.

The segmenter is `cnn --recipe fast` with an eleventh class, "none", trained on MNIST's training
digits plus the labelled parts of --numbers numbers composed from them (validation: the
validation digits and parts of numbers composed from those). The run lives in runs/segmenter and
is reused when finished; the shipped file holds float16 weights, the config and the metrics.
About 10 minutes on 2 cores.

    python benchmarks/ship_segmenter.py [--numbers 2000]
"""

from __future__ import annotations

import argparse
import time

import digitlab
from common import train_or_continue
from digitlab.inference.segmenter import CLASSES, SEGMENTER_FILE, training_set
from digitlab.runs.shipped import ship
from digitlab.training.recipes import apply_recipe

RUN = "runs/segmenter"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=2000, help="composed numbers whose parts train it")
    args = parser.parse_args()
    started = time.perf_counter()
    data = training_set(digitlab.load_dataset("mnist"), numbers=args.numbers)
    print(
        f"{len(data.train):,} training and {len(data.val):,} validation images in {time.perf_counter() - started:.0f} s"
    )
    config = apply_recipe(digitlab.TrainConfig(model="cnn"), "fast").replace(
        out=RUN, epochs=2, label_smoothing=0.0, model_kwargs={"num_classes": len(CLASSES)}
    )
    run = train_or_continue(config, data)
    metrics = {key: run.metrics[key] for key in ("test_accuracy", "val_accuracy", "train_seconds", "parameters")}
    path = ship(run, SEGMENTER_FILE, {**metrics, "run": str(run.path), "numbers": args.numbers})
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} kB) from {run.path}: validation {metrics['val_accuracy']:.2%} "
        f"(digits and parts), test {metrics['test_accuracy']:.2%} (MNIST digits)"
    )


if __name__ == "__main__":
    main()
