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
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import digitlab
from digitlab.data import Split

RESULTS = Path(__file__).parent / "results" / "seed_recipe.json"


class NotebookDataset(torch.utils.data.Dataset):
    """Per-sample PIL conversion, as torchvision.datasets.MNIST with transforms.ToTensor() does."""

    def __init__(self, split: Split):
        self.images = split.images.squeeze(1).numpy()
        self.labels = split.labels.tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        picture = Image.fromarray(self.images[index], mode="L")
        array = np.array(picture, np.uint8, copy=True)
        tensor = torch.from_numpy(array).view(picture.size[1], picture.size[0], 1).permute(2, 0, 1).contiguous()
        return tensor.float().div(255), self.labels[index]


def notebook_accuracy(model: nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.shape[0]
    model.train()
    return correct / total


def run_baseline(data: digitlab.Dataset, epochs: int) -> dict:
    torch.manual_seed(24)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_loader = torch.utils.data.DataLoader(NotebookDataset(data.train), batch_size=64, shuffle=True)
    val_loader = torch.utils.data.DataLoader(NotebookDataset(data.val), batch_size=64)
    test_loader = torch.utils.data.DataLoader(NotebookDataset(data.test), batch_size=64)
    started = time.perf_counter()
    for epoch in range(epochs):
        for images, labels in train_loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_accuracy = notebook_accuracy(model, val_loader)
        print(f"  baseline epoch {epoch + 1}: val accuracy {val_accuracy:.4f}", flush=True)
    seconds = time.perf_counter() - started
    return {"train_seconds": seconds, "val_accuracy": val_accuracy, "test_accuracy": notebook_accuracy(model, test_loader)}


def run_digitlab(data: digitlab.Dataset, epochs: int) -> dict:
    run = digitlab.train(digitlab.TrainConfig(epochs=epochs), dataset=data, save=False,
                         on_epoch=lambda r: print(f"  digitlab epoch {r['epoch']}: val accuracy {r['val_accuracy']:.4f}", flush=True))
    metrics = run.metrics
    return {"train_seconds": metrics["train_seconds"], "val_accuracy": metrics["val_accuracy"],
            "test_accuracy": metrics["test_accuracy"], "engine": metrics["engine"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs for both (default 20)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()
    data = digitlab.load_dataset("mnist")
    print(f"digitlab, {args.epochs} epochs", flush=True)
    ours = run_digitlab(data, args.epochs)
    print(f"notebook-style baseline, {args.epochs} epochs", flush=True)
    baseline = run_baseline(data, args.epochs)
    speedup = baseline["train_seconds"] / ours["train_seconds"]
    gap = abs(ours["test_accuracy"] - baseline["test_accuracy"]) * 100
    result = {
        "benchmark": "seed_recipe", "epochs": args.epochs, "digitlab": ours, "baseline": baseline,
        "speedup": speedup, "accuracy_gap_points": gap,
        "goal": {"speedup_at_least": 10.0, "accuracy_gap_at_most_points": 0.5},
        "passed": speedup >= 10.0 and gap <= 0.5,
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"digitlab {ours['train_seconds']:.1f} s, test {ours['test_accuracy']:.2%}; "
          f"baseline {baseline['train_seconds']:.1f} s, test {baseline['test_accuracy']:.2%}; "
          f"speedup {speedup:.1f}x, gap {gap:.2f} points -> {'PASS' if result['passed'] else 'FAIL'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
