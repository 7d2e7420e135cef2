"""The doctor's zoo: runs with one fault injected each, plus healthy runs of different models; does
`run.doctor()` name every fault by the right check and leave the healthy runs without a warning?

Faults (all on MNIST, the seed MLP unless said): a learning rate 100× and 300× too high and 100× too
low; a first layer initialised dead (its biases at -10, so no unit fires); pixels left at 0-255 (the
model multiplies its [0, 1] input by 255, as a pipeline that forgot to divide would feed it); 20% of
one class's training labels shuffled to other classes; a model far too small (one hidden layer of 3
units); 40 epochs on 1,000 images. Faults that a config cannot express are built through the Python
API (`fit` on a Trainee made here, a Dataset whose labels are changed here). Healthy: the seed MLP,
cnn-tiny and LeNet-5 with their fast recipes. Then the learning-rate range test on the seed MLP: its
range must hold none of the faulty rates, and its suggested rate must train at least as well as the
default.

    python benchmarks/doctor_zoo.py [--seed 24] [--out FILE]

Results go to benchmarks/results/doctor_zoo.json (or --out); the exit code is 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import digitlab
from common import write_result
from digitlab.data.datasets import Split
from digitlab.doctor.lr_find import lr_find
from digitlab.runs.run import Run
from digitlab.training.recipes import apply_recipe
from digitlab.training.train import Trainee, build, choose_engine, fit

EPOCHS = 3  # the seed MLP's runs: 3 epochs of all 55,000 training digits
DEFAULT_LR = digitlab.TrainConfig().lr


class PixelsAt255(nn.Module):
    """The model behind a pipeline that forgot to divide by 255: it sees pixels from 0 to 255."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images * 255)


def dead_first_layer(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model.net[0].bias.fill_(-10.0)  # no digit lifts a unit of the first layer above zero
    return model


def shuffled_class(data: digitlab.Dataset, digit: int = 3, share: float = 0.2, seed: int = 0) -> digitlab.Dataset:
    """`data` with `share` of the training digits labelled `digit` relabelled as another class, at random."""
    generator = torch.Generator().manual_seed(seed)
    labels = data.train.labels.clone()
    members = (labels == digit).nonzero().squeeze(1)
    chosen = members[torch.randperm(len(members), generator=generator)[: int(share * len(members))]]
    labels[chosen] = (digit + torch.randint(1, len(data.classes), (len(chosen),), generator=generator)) % len(
        data.classes
    )
    return dataclasses.replace(data, train=Split(data.train.images, labels))


def trained(config: digitlab.TrainConfig, data: digitlab.Dataset, change: Callable | None = None) -> Run:
    """A run of `config` on `data`, its model changed by `change` before training (fit through the API)."""
    if change is None:
        return digitlab.train(config, dataset=data, save=False, test=False)
    model, _ = build(config)
    model = change(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = fit(Trainee(model, optimizer, choose_engine(config, model, optimizer)), data, config)
    return Run(None, model, config, {"history": history}, data.name, data.sha256, data.classes)


def zoo(data: digitlab.Dataset, seed: int) -> list[dict]:
    """Each run: its name, what was done to it, the check expected to name it (None: healthy), and how to train it."""
    seed_mlp = digitlab.TrainConfig(epochs=EPOCHS, device="cpu", seed=seed)
    small = {"train_size": 20_000, "device": "cpu", "seed": seed}
    return [
        {"name": "lr 100x too high", "expected": "learning-rate-high", "config": seed_mlp.replace(lr=100 * DEFAULT_LR)},
        {"name": "lr 300x too high", "expected": "learning-rate-high", "config": seed_mlp.replace(lr=300 * DEFAULT_LR)},
        {"name": "lr 100x too low", "expected": "learning-rate-low", "config": seed_mlp.replace(lr=DEFAULT_LR / 100)},
        {
            "name": "first layer initialised dead",
            "expected": "dead-units",
            "config": seed_mlp,
            "change": dead_first_layer,
        },
        {"name": "pixels left at 0-255", "expected": "input-scale", "config": seed_mlp, "change": PixelsAt255},
        {
            "name": "20% of the 3s' labels shuffled",
            "expected": "label-noise",
            "config": seed_mlp,
            "data": shuffled_class(data, seed=seed),
        },
        {
            "name": "model far too small (hidden 3)",
            "expected": "underfitting",
            "config": seed_mlp.replace(model_kwargs={"hidden": [3]}),
        },
        {
            "name": "40 epochs on 1,000 images",
            "expected": "overfitting",
            "config": seed_mlp.replace(train_size=1000, epochs=40),
        },
        {"name": "healthy mlp", "expected": None, "config": seed_mlp},
        {
            "name": "healthy cnn-tiny (recipe fast)",
            "expected": None,
            "config": apply_recipe(digitlab.TrainConfig(model="cnn-tiny", **small), "fast"),
        },
        {
            "name": "healthy lenet5 (recipe fast)",
            "expected": None,
            "config": apply_recipe(digitlab.TrainConfig(model="lenet5", **small), "fast"),
        },
    ]


def examine(case: dict, data: digitlab.Dataset) -> dict:
    data = case.get("data", data)
    started = time.perf_counter()
    run = trained(case["config"], data, case.get("change"))
    training = time.perf_counter() - started
    seen = (
        data
        if not case["config"].train_size
        else dataclasses.replace(data, train=data.train.take(case["config"].train_size))
    )
    started = time.perf_counter()
    findings = run.doctor(seen)
    checking = time.perf_counter() - started
    alarms = findings.alarms()
    expected = case["expected"]
    ok = (not alarms) if expected is None else expected in findings.checks()
    naming = [finding for finding in alarms if finding.check == expected]
    return {
        "name": case["name"],
        "expected": expected,
        "ok": ok,
        "alarms": [{"check": finding.check, "severity": finding.severity} for finding in alarms],
        "message": naming[0].message if naming else None,
        "val_accuracy": run.metrics["history"][-1]["val_accuracy"],
        "train_seconds": training,
        "doctor_seconds": checking,
    }


def range_test(data: digitlab.Dataset) -> dict:
    """lr-find on the seed MLP: its range against the faulty rates, and its suggestion against the default."""
    config = digitlab.TrainConfig(epochs=EPOCHS, device="cpu")
    started = time.perf_counter()
    found = lr_find(config, data)
    seconds = time.perf_counter() - started
    faulty = [100 * DEFAULT_LR, 300 * DEFAULT_LR, DEFAULT_LR / 100]
    inside = [rate for rate in faulty if found.low <= rate <= found.high]
    default = digitlab.train(config, dataset=data, save=False, test=False).metrics["val_accuracy"]
    suggested = digitlab.train(config.replace(lr=found.suggested), dataset=data, save=False, test=False)
    accuracy = suggested.metrics["val_accuracy"]
    return {
        "range": [found.low, found.high],
        "suggested": found.suggested,
        "seconds": seconds,
        "faulty_rates_inside": inside,
        "val_accuracy_default_lr": default,
        "val_accuracy_suggested_lr": accuracy,
        "ok": not inside and accuracy >= default,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=digitlab.TrainConfig().seed, help="initialisation and batch order")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    data = digitlab.load_dataset("mnist", download=False)
    runs = []
    for case in zoo(data, args.seed):
        runs.append(examine(case, data))
        mark = "ok  " if runs[-1]["ok"] else "MISS"
        print(
            f"{mark} {case['name']}: {', '.join(a['check'] for a in runs[-1]['alarms']) or 'no warnings'}", flush=True
        )
    rates = range_test(data)
    print(
        f"{'ok  ' if rates['ok'] else 'MISS'} lr-find: range {rates['range'][0]:.2g} to {rates['range'][1]:.2g}, "
        f"suggested {rates['suggested']:.2g}",
        flush=True,
    )
    faults = [run for run in runs if run["expected"]]
    healthy = [run for run in runs if not run["expected"]]
    result = {
        "threads": torch.get_num_threads(),
        "seed": args.seed,
        "runs": runs,
        "lr_find": rates,
        "faults_named": sum(run["ok"] for run in faults),
        "faults": len(faults),
        "healthy_without_warnings": sum(run["ok"] for run in healthy),
        "healthy": len(healthy),
        "seconds": time.perf_counter() - started,
    }
    result["goals_met"] = all(run["ok"] for run in runs) and rates["ok"]
    path = write_result("doctor_zoo", result, args.out)
    print(
        f"{result['faults_named']}/{len(faults)} faults named by the right check, "
        f"{result['healthy_without_warnings']}/{len(healthy)} healthy runs without warnings, "
        f"{result['seconds']:.0f} s; written to {path}"
    )
    return 0 if result["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
