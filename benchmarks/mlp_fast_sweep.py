"""How the `mlp --recipe fast` learning rate was chosen: validation accuracy only, never the test set.

Trains the fast MLP recipe with each learning rate (and its other settings unchanged) for seeds
1, 2, 3 and 24 and reports the validation accuracy after the last epoch.

    python benchmarks/mlp_fast_sweep.py [--lrs 0.01 0.02 0.03 0.04]

Results go to benchmarks/results/mlp_fast_sweep.json (about a minute on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import statistics

import digitlab
from common import write_result
from digitlab.training.recipes import apply_recipe

SEEDS = (1, 2, 3, 24)


def validation_accuracy(data: digitlab.Dataset, lr: float, seed: int) -> float:
    config = apply_recipe(digitlab.TrainConfig(model="mlp"), "fast").replace(lr=lr, seed=seed)
    return digitlab.train(config, dataset=data, save=False, test=False).metrics["val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.04])
    args = parser.parse_args()
    data = digitlab.load_dataset("mnist")
    rows = []
    for lr in args.lrs:
        accuracies = [validation_accuracy(data, lr, seed) for seed in SEEDS]
        rows.append(
            {
                "lr": lr,
                "val_accuracy": dict(zip(map(str, SEEDS), accuracies, strict=True)),
                "val_accuracy_mean": statistics.fmean(accuracies),
            }
        )
        print(f"lr {lr:g}: validation {statistics.fmean(accuracies):.2%} mean over seeds {list(SEEDS)}", flush=True)
    best = max(rows, key=lambda row: row["val_accuracy_mean"])
    path = write_result(
        "mlp_fast_sweep",
        {
            "recipe": apply_recipe(digitlab.TrainConfig(model="mlp"), "fast").to_dict(),
            "seeds": list(SEEDS),
            "rows": rows,
            "best_lr": best["lr"],
        },
    )
    print(f"best lr {best['lr']:g}; wrote {path}")


if __name__ == "__main__":
    main()
