"""Studies that train many runs and compare them; first: what augmentation buys.

`augmentation_study` trains each model with and without augmentation for several seeds, each
with the model's recipe, and measures test accuracy on the clean test set and on rotated, shifted
and scaled copies of it (`evaluate.robustness`). Results are mean ± std over seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from ..config import TrainConfig
from ..data.datasets import Dataset, load_dataset
from ..files import atomic_write, write_json
from ..inference.evaluate import robustness
from .recipes import AUGMENT, apply_recipe


def augmentation_study(
    seeds: int = 3,
    models: tuple[str, ...] = ("mlp", "cnn"),
    recipe: str = "fast",
    epochs: int | None = None,
    out: str | Path = "experiments/augmentation",
    dataset: Dataset | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Train {models} x {no augmentation, augmentation} x seeds; write results.json, results.md, plot.png.

    Each run uses `recipe` for its model (and `epochs`, if given) and differs only in the
    augmentation preset (`digitlab.training.recipes.AUGMENT`). Runs are saved under OUT/runs/.
    """
    from ..figures.predictions import augmentation_study as plot
    from .train import train

    out = Path(out)
    dataset = dataset or load_dataset("mnist")
    runs = []
    for model in models:
        base = apply_recipe(TrainConfig(model=model), recipe)
        base = base.replace(epochs=epochs) if epochs else base
        for augment in (False, True):
            for seed in range(1, seeds + 1):
                name = f"{model}-{'aug' if augment else 'plain'}-seed{seed}"
                config = base.replace(seed=seed, out=str(out / "runs" / name), **(AUGMENT if augment else {}))
                run = train(config, dataset=dataset)
                scores = robustness(run.model, dataset.test)
                runs.append(
                    {
                        "model": model,
                        "augment": augment,
                        "seed": seed,
                        "run": str(run.path),
                        "test_accuracy": run.metrics["test_accuracy"],
                        "robustness": scores,
                        "train_seconds": run.metrics["train_seconds"],
                    }
                )
                log(
                    f"{name}: test {run.metrics['test_accuracy']:.2%}, rotated ±30° "
                    f"{(scores['rotate -30°'] + scores['rotate +30°']) / 2:.2%}, {run.metrics['train_seconds']:.1f} s"
                )
    summary = summarize(runs)
    result = {
        "recipe": recipe,
        "epochs": epochs,
        "seeds": seeds,
        "models": list(models),
        "summary": summary,
        "runs": runs,
    }
    write_json(out / "results.json", result)
    atomic_write(out / "results.md", lambda temp: Path(temp).write_text(markdown_table(summary)))
    atomic_write(out / "plot.png", lambda temp: plot(summary).savefig(temp, format="png"))
    return result


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and std over seeds per (model, augment) condition."""
    conditions = []
    for model in dict.fromkeys(run["model"] for run in runs):
        for augment in (False, True):
            group = [run for run in runs if run["model"] == model and run["augment"] == augment]
            if not group:
                continue
            names = list(group[0]["robustness"])
            conditions.append(
                {
                    "model": model,
                    "augment": augment,
                    "runs": len(group),
                    **_mean_std("test_accuracy", [run["test_accuracy"] for run in group]),
                    **_mean_std("train_seconds", [run["train_seconds"] for run in group]),
                    "robustness_mean": {n: statistics.fmean(run["robustness"][n] for run in group) for n in names},
                    "robustness_std": {n: _std([run["robustness"][n] for run in group]) for n in names},
                }
            )
    return conditions


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_std(name: str, values: list[float]) -> dict:
    return {f"{name}_mean": statistics.fmean(values), f"{name}_std": _std(values)}


def markdown_table(summary: list[dict]) -> str:
    """The study as a Markdown table: one row per condition, accuracies in percent (mean ± std)."""
    names = [name for name in summary[0]["robustness_mean"] if name != "clean"]
    header = ["model", "augmentation", "test accuracy", *names, "training s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in summary:
        cells = [
            row["model"],
            "yes" if row["augment"] else "no",
            f"{row['test_accuracy_mean']:.2%} ± {row['test_accuracy_std']:.2%}",
            *(f"{row['robustness_mean'][n]:.1%} ± {row['robustness_std'][n]:.1%}" for n in names),
            f"{row['train_seconds_mean']:.1f} ± {row['train_seconds_std']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
