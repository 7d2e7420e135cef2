"""Time to 99.0% test accuracy: digitlab's `cnn --recipe fast` against the well-known PyTorch example.

The reference follows pytorch/examples mnist/main.py: Conv32-Conv64-MaxPool-Dropout 0.25-FC128-
Dropout 0.5-FC10, Adadelta lr 1.0, StepLR gamma 0.7, batch 64, a per-sample DataLoader with
normalisation (0.1307, 0.3081). Both train on the same 55,000 images, one after the other in this
process; both are evaluated on the test set after every epoch, and evaluation time is not counted.

    python benchmarks/cnn_speed.py [--target 0.99] [--max-reference-epochs 8]

writes benchmarks/results/cnn_speed.json. Goal: digitlab >= 8x faster to 99.0%.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import digitlab
from common import NotebookDataset, Stopwatch, loader_accuracy, time_recipe, write_result


class ExampleNet(nn.Module):
    """The network of pytorch/examples mnist/main.py."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = torch.flatten(self.dropout1(F.max_pool2d(x, 2)), 1)
        return F.log_softmax(self.fc2(self.dropout2(F.relu(self.fc1(x)))), dim=1)


def run_reference(data: digitlab.Dataset, target: float, max_epochs: int) -> Stopwatch:
    torch.manual_seed(1)
    model = ExampleNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    normalize = (0.1307, 0.3081)
    train_loader = torch.utils.data.DataLoader(NotebookDataset(data.train, normalize), batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(NotebookDataset(data.test, normalize), batch_size=1000)
    watch = Stopwatch()
    for epoch in range(max_epochs):
        watch.start()
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            F.nll_loss(model(images), labels).backward()
            optimizer.step()
        scheduler.step()
        watch.stop()
        watch.lap(loader_accuracy(model, test_loader))
        print(
            f"  reference epoch {epoch + 1}: {watch.seconds:.1f} s, test {watch.epochs[-1]['test_accuracy']:.2%}",
            flush=True,
        )
        if watch.epochs[-1]["test_accuracy"] >= target:
            break
    return watch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.99, help="test accuracy to reach")
    parser.add_argument("--max-reference-epochs", type=int, default=8, help="stop the reference after this many")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--recipe", default="fast")
    args = parser.parse_args()
    data = digitlab.load_dataset("mnist")
    print(f"digitlab {args.model} --recipe {args.recipe}", flush=True)
    ours, config = time_recipe(data, args.model, args.recipe)
    print("reference (pytorch/examples mnist)", flush=True)
    reference = run_reference(data, args.target, args.max_reference_epochs)
    ours_time, reference_time = ours.time_to(args.target), reference.time_to(args.target)
    speedup = reference_time / ours_time if ours_time and reference_time else None
    result = {
        "target": args.target,
        "goal_speedup": 8.0,
        "digitlab": {
            "model": args.model,
            "recipe": args.recipe,
            "config": config.to_dict(),
            "seconds_to_target": ours_time,
            "epochs": ours.epochs,
        },
        "reference": {"seconds_to_target": reference_time, "epochs": reference.epochs},
        "speedup": speedup,
        "passed": bool(speedup and speedup >= 8.0),
    }
    path = write_result("cnn_speed", result)
    print(
        f"to {args.target:.1%}: digitlab {ours_time} s, reference {reference_time} s, speedup "
        f"{speedup and round(speedup, 1)}x -> {'PASS' if result['passed'] else 'FAIL'}; wrote {path}"
    )


if __name__ == "__main__":
    main()
