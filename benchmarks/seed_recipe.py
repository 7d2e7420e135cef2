"""The seed recipe, digitlab against a notebook-style baseline, one after the other in one process.

Both train the seed architecture (784-32-16-10) with Adam lr 1e-3, batch 64, seed 24, on the same
55,000 training images, check the same 5,000 validation images after every epoch, and report
test accuracy at the end. The baseline does what the seed notebook did: a Dataset that turns each
uint8 image into a PIL image and then into a float tensor (torchvision's ToTensor, reproduced
here since there is no CPU torchvision), a DataLoader, autograd and torch.optim.Adam.

    python benchmarks/seed_recipe.py [--epochs 20]

writes benchmarks/results/seed_recipe.json. Goal: digitlab >= 10x faster, accuracy within 0.5 points.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import digitlab
from common import NotebookDataset, Stopwatch, loader_accuracy, write_result


def run_baseline(
    data: digitlab.Dataset, epochs: int, test_each_epoch: bool = False, stop_at: float | None = None
) -> dict:
    """The notebook's loop. Timed: training and the validation pass of each epoch. With
    test_each_epoch, the test set is checked after every epoch too (not timed), and training
    stops early once test accuracy reaches `stop_at`."""
    torch.manual_seed(24)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_loader = torch.utils.data.DataLoader(NotebookDataset(data.train), batch_size=64, shuffle=True)
    val_loader = torch.utils.data.DataLoader(NotebookDataset(data.val), batch_size=64)
    test_loader = torch.utils.data.DataLoader(NotebookDataset(data.test), batch_size=64)
    watch = Stopwatch()
    for epoch in range(epochs):
        watch.start()
        for images, labels in train_loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_accuracy = loader_accuracy(model, val_loader)
        watch.stop()
        test_accuracy = loader_accuracy(model, test_loader) if test_each_epoch else None
        watch.lap(test_accuracy)
        print(
            f"  baseline epoch {epoch + 1}: {watch.seconds:.1f} s, val accuracy {val_accuracy:.4f}"
            + (f", test {test_accuracy:.4f}" if test_each_epoch else ""),
            flush=True,
        )
        if stop_at is not None and test_accuracy is not None and test_accuracy >= stop_at:
            break
    return {
        "train_seconds": watch.seconds,
        "val_accuracy": val_accuracy,
        "test_accuracy": loader_accuracy(model, test_loader),
        "epochs": watch.epochs,
    }


def run_digitlab(data: digitlab.Dataset, epochs: int) -> dict:
    run = digitlab.train(
        digitlab.TrainConfig(epochs=epochs),
        dataset=data,
        save=False,
        on_epoch=lambda r: print(f"  digitlab epoch {r['epoch']}: val accuracy {r['val_accuracy']:.4f}", flush=True),
    )
    metrics = run.metrics
    return {
        "train_seconds": metrics["train_seconds"],
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "engine": metrics["engine"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs for both (default 20)")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/seed_recipe.json)")
    args = parser.parse_args()
    data = digitlab.load_dataset("mnist")
    print(f"digitlab, {args.epochs} epochs", flush=True)
    ours = run_digitlab(data, args.epochs)
    print(f"notebook-style baseline, {args.epochs} epochs", flush=True)
    baseline = run_baseline(data, args.epochs)
    speedup = baseline["train_seconds"] / ours["train_seconds"]
    gap = abs(ours["test_accuracy"] - baseline["test_accuracy"]) * 100
    result = {
        "epochs": args.epochs,
        "digitlab": ours,
        "baseline": baseline,
        "speedup": speedup,
        "accuracy_gap_points": gap,
        "goal": {"speedup_at_least": 10.0, "accuracy_gap_at_most_points": 0.5},
        "passed": speedup >= 10.0 and gap <= 0.5,
    }
    path = write_result("seed_recipe", result, args.out)
    print(
        f"digitlab {ours['train_seconds']:.1f} s, test {ours['test_accuracy']:.2%}; "
        f"baseline {baseline['train_seconds']:.1f} s, test {baseline['test_accuracy']:.2%}; "
        f"speedup {speedup:.1f}x, gap {gap:.2f} points -> {'PASS' if result['passed'] else 'FAIL'}"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
