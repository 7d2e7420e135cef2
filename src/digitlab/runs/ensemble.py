"""Ensembles: several trained runs as one model that averages their probabilities, saved as a run folder.

`build_ensemble(["runs/a", "runs/b", ...], out="runs/ens")` checks that the runs can be averaged
(the same dataset files, classes, validation split and preprocessing), assembles the `ensemble`
model (digitlab.models.nets.Ensemble), scores it once on the validation and test splits, with and
without test-time augmentation, and writes a run folder that `evaluate`, `predict`, `serve` and
`export` accept like any other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import TrainConfig
from ..errors import ConfigError, RunError
from ..inference.evaluate import evaluate
from ..models.nets import count_parameters, create_model
from .run import Run, load_run, new_run_folder, save_run


def build_ensemble(
    runs: list[Run | str | Path], out: str | Path | None = None, device: str | torch.device = "cpu", save: bool = True
) -> Run:
    """The runs' models as one `ensemble` model, scored on validation and test (plain and with TTA),
    saved to `out` (default runs/ensemble-<timestamp>) unless save=False.

    Runs of different datasets, class lists, validation splits or preprocessing are refused, naming
    two runs that differ; a run whose model file is missing or corrupt is named by load_run.
    """
    if len(runs) < 2:
        raise ConfigError(f"an ensemble needs at least two runs, got {len(runs)}")
    members = [run if isinstance(run, Run) else load_run(run, device) for run in runs]
    names = [str(run if not isinstance(run, Run) else run.path or f"run {index + 1}") for index, run in enumerate(runs)]
    check_compatible(members, names)
    first = members[0]
    model = create_model("ensemble", members=[member.model.spec for member in members])
    for slot, member in zip(model.members, members, strict=True):  # type: ignore[arg-type]  # an nn.ModuleList
        slot.load_state_dict(member.model.state_dict())
    # the ensemble trains nothing: its config keeps only what says which data and pictures it reads
    config = TrainConfig(
        model="ensemble",
        model_kwargs=dict(model.spec["kwargs"]),  # type: ignore[index]  # spec is a plain dict (create_model)
        dataset=first.config.dataset,
        val_size=first.config.val_size,
        split_seed=first.config.split_seed,
        preprocess=first.config.preprocess,
        out=str(out) if out else None,
    )
    run = Run(
        None,
        model.to(next(first.model.parameters()).device).eval(),
        config,
        {},
        first.dataset,
        first.dataset_sha256,
        first.classes,
        first.preprocess,
    )
    run.metrics = _scores(run, members, names)
    if save:
        run.path = new_run_folder(config)
        save_run(run)
    return run


def check_compatible(members: list[Run], names: list[str]) -> None:
    """RunError naming the first run that cannot be averaged with the first one, and why."""
    first, first_name = members[0], names[0]
    for member, name in zip(members[1:], names[1:], strict=True):
        differences = [
            ("datasets", (member.dataset, member.dataset_sha256) != (first.dataset, first.dataset_sha256)),
            ("class lists", tuple(member.classes) != tuple(first.classes)),
            (
                "validation splits",
                (member.config.val_size, member.config.split_seed) != (first.config.val_size, first.config.split_seed),
            ),
            ("preprocessing", member.preprocess != first.preprocess),
        ]
        for what, differs in differences:
            if differs:
                raise RunError(f"cannot ensemble {first_name} and {name}: they were trained on different {what}")


def _scores(run: Run, members: list[Run], names: list[str]) -> dict:
    """The ensemble's metrics: validation and test accuracy, plain and with test-time augmentation,
    and each member's own figures as its run recorded them."""
    data = run.data()
    scores = {
        (split, tta): evaluate(run.model, data.splits()[split], data.classes, tta)
        for split in ("val", "test")
        for tta in (False, True)
        if len(data.splits()[split])
    }
    plain, augmented = scores.get(("test", False)), scores.get(("test", True))
    return {
        "test_accuracy": plain and plain["accuracy"],
        "test_loss": plain and plain["loss"],
        "val_accuracy": scores[("val", False)]["accuracy"] if ("val", False) in scores else None,
        "tta": {
            "val_accuracy": scores[("val", True)]["accuracy"] if ("val", True) in scores else None,
            "test_accuracy": augmented and augmented["accuracy"],
        },
        "members": [
            {
                "run": name,
                "model": member.config.model,
                "val_accuracy": member.metrics.get("val_accuracy"),
                "test_accuracy": member.metrics.get("test_accuracy"),
            }
            for member, name in zip(members, names, strict=True)
        ],
        "train_seconds": sum(member.metrics.get("train_seconds") or 0 for member in members),
        "parameters": count_parameters(run.model),
        "epoch": None,
        "history": [],
        "test": plain,
    }
