"""Train the model shipped inside the package and write it to src/digitlab/weights/.

It is `cnn --recipe robust` with seed 1 (the run lives in runs/realworld/cnn-robust, the same run
benchmarks/real_world.py scores, and is reused when finished). The shipped file holds float16
weights, the resolved config, the dataset's checksums, the preprocessing and the run's metrics.

    python benchmarks/ship_model.py
"""

from __future__ import annotations

import digitlab
from common import train_or_continue
from digitlab.runs.shipped import SHIPPED_MODEL, ship
from real_world import CONFIGS, RUNS

RECIPE = "cnn --recipe robust"


def main() -> None:
    data = digitlab.load_dataset("mnist")
    run = train_or_continue(CONFIGS[RECIPE].replace(out=str(RUNS / "cnn-robust")), data)
    metrics = {
        key: run.metrics[key] for key in ("test_accuracy", "val_accuracy", "epoch", "train_seconds", "parameters")
    }
    path = ship(run, SHIPPED_MODEL, {**metrics, "run": str(run.path), "recipe": RECIPE})
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} kB) from {run.path}: test {metrics['test_accuracy']:.2%}, "
        f"{metrics['train_seconds']:.0f} s of training"
    )


if __name__ == "__main__":
    main()
