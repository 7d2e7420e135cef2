"""Teach the shipped model a way of writing MNIST lacks: the flagged 1 (digitlab.inference.styles).

A short fine-tune of the shipped model (or `--start`) on MNIST's training split with `--flagged`
flagged 1s (labelled 1) mixed in, every batch augmented as the model's own recipe augments
(training.outliers.expose with no non-digits: Exposure(weight=0)). Chosen on validation only: MNIST's
validation split and flagged 1s drawn from a validation seed, before and after, are printed; MNIST's
test split is evaluated once, at the end. Writes the fine-tuned model to `--out`. Its features have
moved, so the not-a-digit judge must be fitted afresh before it ships:

    python benchmarks/ship_styles.py --out runs/styled.safetensors [--flagged 3000] [--epochs 1] [--lr 3e-4]
    python benchmarks/ship_rejection.py --start runs/styled.safetensors --epochs 0 ...   (its own docstring)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import digitlab
from digitlab.data.datasets import Split
from digitlab.inference.evaluate import evaluate
from digitlab.inference.styles import flagged_ones
from digitlab.runs.run import load_run
from digitlab.runs.shipped import SHIPPED_MODEL, ship
from digitlab.training.outliers import Exposure, expose

TRAIN_SEED, VAL_SEED = 100, 101  # flagged 1s for training and for choosing; hard_digits.py draws its own


def flagged_read(model: torch.nn.Module, pictures: torch.Tensor) -> float:
    """Share of flagged 1s (MNIST-style pictures) the model reads as 1."""
    return float(evaluate(model, Split(pictures, torch.ones(len(pictures), dtype=torch.long)))["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=Path, default=SHIPPED_MODEL, help="model file to start from")
    parser.add_argument("--out", type=Path, required=True, help="model file to write")
    parser.add_argument("--flagged", type=int, default=3000, help="flagged 1s mixed into the training digits")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training digits")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (cosine to 0)")
    args = parser.parse_args()
    started = time.perf_counter()
    run, mnist = load_run(args.start), digitlab.load_dataset("mnist")
    val_flagged = flagged_ones(1000, VAL_SEED)
    before = {
        "val_accuracy": evaluate(run.model, mnist.val)["accuracy"],
        "val_flagged": flagged_read(run.model, val_flagged),
    }
    print(f"before: validation {before['val_accuracy']:.2%}, validation flagged 1s read {before['val_flagged']:.1%}")
    flagged = flagged_ones(args.flagged, TRAIN_SEED)
    train = Split(
        torch.cat([mnist.train.images, flagged]),
        torch.cat([mnist.train.labels, torch.ones(len(flagged), dtype=torch.long)]),
    )
    history = expose(
        run.model, train, flagged[:0], run.config.augmentation(), Exposure(epochs=args.epochs, lr=args.lr, weight=0.0)
    )
    after = {
        "val_accuracy": evaluate(run.model, mnist.val)["accuracy"],
        "val_flagged": flagged_read(run.model, val_flagged),
    }
    print(f"after:  validation {after['val_accuracy']:.2%}, validation flagged 1s read {after['val_flagged']:.1%}")
    test = float(evaluate(run.model, mnist.test)["accuracy"])
    print(f"test {test:.2%} (evaluated once)")
    styles = {
        "flagged": args.flagged,
        "epochs": args.epochs,
        "lr": args.lr,
        "before": before,
        "after": after,
        "history": history,
    }
    ship(run, args.out, {**run.metrics, "val_accuracy": after["val_accuracy"], "test_accuracy": test, "styles": styles})
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
