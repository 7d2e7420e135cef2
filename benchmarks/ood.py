"""Not a digit: how well each run's out-of-distribution score tells digits from other pictures.

The standard protocol: MNIST test digits (inliers) against Fashion-MNIST test images (outliers),
both as the raw 28x28 tensors; also against random strokes and nearly blank noise
(digitlab.inference.ood.random_strokes, blank_noise). For each run: AUROC of its stored score (the
detector in its model file; one is fitted in memory, and said so, for a run without one), the
share of each outlier set it rejects at its stored threshold, the false-rejection rate on MNIST
test, and the max-softmax-probability baseline (Hendrycks & Gimpel 2017) for comparison.

    python benchmarks/ood.py RUN [RUN...] [--count 10000]

writes benchmarks/results/ood.json. Goal: AUROC >= 0.99 against Fashion-MNIST test with at most
1% of MNIST test digits rejected; exits 1 if a run misses it.
"""

from __future__ import annotations

import argparse

import torch

from common import write_result
from digitlab import load_dataset, load_run
from digitlab.images.preprocess import deskew
from digitlab.inference.ood import auroc, blank_noise, observe, random_strokes

GOAL_AUROC, GOAL_FALSE_REJECTION = 0.99, 0.01


def outlier_sets(count: int) -> dict[str, torch.Tensor]:
    return {
        "fashion-mnist": load_dataset("fashion-mnist").test.images[:count],
        "random strokes": random_strokes(count, seed=1),
        "blank noise": blank_noise(count, seed=2),
    }


def measure(path: str, outliers: dict[str, torch.Tensor], count: int) -> dict:
    run = load_run(path)
    calibrated_here = run.ood is None
    detector = _calibrate_in_memory(run) if calibrated_here else run.ood
    transform = deskew if run.preprocess.deskew else None
    digits = observe(run.model, run.data().test.images[:count], transform=transform)
    digit_scores, digit_msp = detector.score(digits), _msp_score(digits)
    result = {
        "run": str(path),
        "model": run.config.model,
        "calibrated_by_benchmark": calibrated_here,
        "threshold": detector.threshold,
        "quantile": detector.quantile,
        "method": detector.method,
        "test_accuracy": run.metrics.get("test_accuracy"),
        "digits": len(digit_scores),
        "false_rejection": float(detector.rejects(digit_scores).double().mean()),
        "outliers": {},
    }
    for name, images in outliers.items():
        seen = observe(run.model, images, transform=transform)
        scores = detector.score(seen)
        result["outliers"][name] = {
            "count": len(scores),
            "auroc": auroc(digit_scores, scores),
            "rejected": float(detector.rejects(scores).double().mean()),
            "msp_auroc": auroc(digit_msp, _msp_score(seen)),
        }
    result["goal_met"] = (
        result["outliers"]["fashion-mnist"]["auroc"] >= GOAL_AUROC and result["false_rejection"] <= GOAL_FALSE_REJECTION
    )
    return result


def _calibrate_in_memory(run):
    """Fit the detector without rewriting the run's model file (the benchmark only reads runs)."""
    folder, run.path = run.path, None
    try:
        return run.calibrate_ood()
    finally:
        run.path = folder


def _msp_score(seen) -> torch.Tensor:
    """The baseline: one minus the maximum softmax probability (higher is less digit-like)."""
    return 1 - seen.logits.double().softmax(1).max(1).values


def print_table(results: list[dict]) -> None:
    names = list(results[0]["outliers"])
    print(f"{'run':<32} {'false rej.':>10}  " + "  ".join(f"{name + ' AUROC (rej., MSP)':>36}" for name in names))
    for result in results:
        cells = [f"{o['auroc']:.4f} ({o['rejected']:.1%}, {o['msp_auroc']:.4f})" for o in result["outliers"].values()]
        print(
            f"{result['run'][-32:]:<32} {result['false_rejection']:>10.2%}  "
            + "  ".join(f"{c:>36}" for c in cells)
            + ("" if result["goal_met"] else "  GOAL MISSED")
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or model files)")
    parser.add_argument("--count", type=int, default=10_000, help="images per set")
    args = parser.parse_args()
    outliers = outlier_sets(args.count)
    results = [measure(path, outliers, args.count) for path in args.runs]
    print_table(results)
    path = write_result(
        "ood", {"goal": {"fashion_auroc": GOAL_AUROC, "false_rejection": GOAL_FALSE_REJECTION}, "runs": results}
    )
    print(f"wrote {path}")
    return 0 if all(result["goal_met"] for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
