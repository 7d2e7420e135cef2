"""The real-world suite for each model, an ablation of the preprocessing steps, idempotence, and predict speed.

Models: the seed `mlp`, `cnn --recipe fast`, `cnn --recipe robust` (trained here, kept under
runs/realworld/, reused when finished) and the model shipped inside the package. For each: MNIST
test accuracy, and accuracy on the real-world suite rendered from TEST digits (digitlab.inference.realworld),
per condition and overall, read through predict's pipeline. Then the same suite with each
preprocessing step switched off (and with digitlab 0.1's pipeline), the number of answers that
change when `predict` reads its own --save-preprocessed output, and right answers per second of
`predict` on a folder of 1,000 suite pictures
(right answers only: wrong answers, refusals and errors are counted beside the rate).

Goals for the shipped model: >= 99.5% on MNIST test, >= 98% on the suite overall and >= 95% in its
worst condition.

    python benchmarks/real_world.py [--count 300] [--skip-training]

Writes benchmarks/results/real_world.json. About 15 minutes on this 2-core machine once the runs
exist (rendering and preprocessing 3,300 pictures per variant dominate).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import digitlab
from common import tally, train_or_continue, write_result
from digitlab.config import PreprocessOptions
from digitlab.inference.predict import save_preprocessed
from digitlab.inference.realworld import CONDITIONS, DEFAULT_COUNT, read_suite, render_suite, suite_accuracy
from digitlab.runs.shipped import SHIPPED_MODEL, load_shipped
from digitlab.training.recipes import apply_recipe

RUNS = Path("runs/realworld")
CONFIGS = {
    "mlp": digitlab.TrainConfig(),
    "cnn --recipe fast": apply_recipe(digitlab.TrainConfig(model="cnn"), "fast"),
    "cnn --recipe robust": apply_recipe(digitlab.TrainConfig(model="cnn"), "robust").replace(seed=1),
}
GOALS = {"mnist_test": 0.995, "overall": 0.98, "worst_condition": 0.95}
ABLATION = ("no-flatten", "no-clean", "no-stroke", "legacy")


def runs(data: digitlab.Dataset, skip_training: bool) -> dict[str, digitlab.Run]:
    """The benchmark's models by name: trained (or reused) runs, then the shipped model."""
    found = {}
    for name, config in CONFIGS.items():
        folder = RUNS / name.replace(" --recipe ", "-")
        if skip_training and not (folder / "metrics.json").exists():
            continue
        found[name] = train_or_continue(config.replace(out=str(folder)), data)
    found["shipped"] = load_shipped()
    return found


def mnist_test_accuracy(run: digitlab.Run) -> float:
    """A trained run's recorded test accuracy; a bare model file (the shipped float16 one) is tested itself."""
    return run.evaluate("test")["accuracy"] if run.path is None else run.metrics["test_accuracy"]


def idempotence(run: digitlab.Run, samples: list) -> dict:
    """How many answers change when predict reads the 28×28 images it saved with --save-preprocessed."""
    with tempfile.TemporaryDirectory() as folder:
        pictures = Path(folder) / "pictures"
        pictures.mkdir()
        for number, sample in enumerate(samples):
            (pictures / f"{number:04d}{sample.suffix}").write_bytes(sample.data)
        first = run.predict(pictures, errors="collect")
        saved = save_preprocessed(first, Path(folder) / "seen")
        second = run.predict([str(path) for path in saved], errors="collect")
    answered = [result for result in first if result.ok]
    changed = sum(a.label != b.label for a, b in zip(answered, second, strict=False))
    return {"pictures": len(answered), "changed": changed}


def folder_speed(run: digitlab.Run, samples: list) -> dict:
    """Right answers per second of run.predict on a folder of suite pictures (files written first, not
    timed); wrong answers, refusals and errors beside it, never in the rate."""
    with tempfile.TemporaryDirectory() as folder:
        for number, sample in enumerate(samples):
            (Path(folder) / f"{number:04d}{sample.suffix}").write_bytes(sample.data)
        started = time.perf_counter()
        results = run.predict(folder, errors="collect")  # the folder's files by name: the samples' order
        seconds = time.perf_counter() - started
    counts = tally(results, [run.classes[sample.label] for sample in samples])
    return {"pictures": len(results), "seconds": seconds, **counts, "right_per_second": counts["right"] / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="pictures per condition")
    parser.add_argument("--skip-training", action="store_true", help="score only the runs that already exist")
    args = parser.parse_args()
    started = time.time()
    data = digitlab.load_dataset("mnist")
    models = runs(data, args.skip_training)
    samples = list(render_suite(data.test.images, data.test.labels, args.count, seed=0))
    print(f"rendered {len(samples):,} pictures from test digits", flush=True)
    default = read_suite(samples, PreprocessOptions())
    rows = {}
    for name, run in models.items():
        scores = suite_accuracy(
            run.model, default if run.preprocess == default.options else read_suite(samples, run.preprocess)
        )
        rows[name] = {"mnist_test": mnist_test_accuracy(run), **scores}
        print(f"{name:>20}: MNIST test {rows[name]['mnist_test']:.2%}, real world {scores['overall']:.2%}", flush=True)
    shipped = models["shipped"]
    ablation = {"default": rows["shipped"]}
    for steps in ABLATION:
        ablation[steps] = suite_accuracy(shipped.model, read_suite(samples, shipped.preprocess.with_steps(steps)))
        print(f"  shipped, {steps}: {ablation[steps]['overall']:.2%}", flush=True)
    every = max(1, len(samples) // 1000)
    checks = {"idempotence": idempotence(shipped, samples[::every]), "speed": folder_speed(shipped, samples[::every])}
    worst = min(rows["shipped"]["conditions"].values())
    passed = {
        "mnist_test": rows["shipped"]["mnist_test"] >= GOALS["mnist_test"],
        "overall": rows["shipped"]["overall"] >= GOALS["overall"],
        "worst_condition": worst >= GOALS["worst_condition"],
    }
    result = {
        "count_per_condition": args.count,
        "conditions": list(CONDITIONS),
        "models": rows,
        "ablation_shipped": ablation,
        **checks,
        "shipped_file": SHIPPED_MODEL.name,
        "goals": GOALS,
        "passed": passed,
        "wall_seconds": time.time() - started,
    }
    print(write_result("real_world", result))
    print(
        f"idempotence: {checks['idempotence']['changed']} of {checks['idempotence']['pictures']} answers changed; "
        f"predict: {checks['speed']['right_per_second']:.0f} right answers/s "
        f"({checks['speed']['wrong']} wrong, {checks['speed']['refused']} refused, {checks['speed']['errors']} errors); "
        f"goals: {passed}"
    )
    raise SystemExit(0 if all(passed.values()) else 1)


if __name__ == "__main__":
    main()
