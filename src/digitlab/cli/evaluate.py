"""Commands that score and describe a trained run: evaluate (accuracy, per-class scores, suites) and report (HTML)."""

from __future__ import annotations

import json

from .common import add_device


def add_parsers(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="report a run's accuracy, per-class scores and confusion matrix")
    evaluate.add_argument("run", help="run folder")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test", help="split to evaluate")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the model over each digit shifted by 1 px (4 ways) and "
        "rotated by ±8° (never flipped); 7 forward passes per digit",
    )
    evaluate.add_argument(
        "--robustness",
        action="store_true",
        help="also report accuracy on the split rotated ±15°/±30°, shifted ±3 px, scaled 0.8",
    )
    evaluate.add_argument(
        "--real-world",
        action="store_true",
        help="also score the real-world suite: digits re-rendered as photos, scans, pens, "
        "canvas drawings, read through predict's pipeline (written into metrics.json)",
    )
    evaluate.add_argument(
        "--non-digits",
        action="store_true",
        help="also score the non-digit suite: letters, words, symbols, doodles, scribbles, pairs of digits, "
        "Fashion-MNIST, photos, blank paper, read as files; prints the share of each turned away",
    )
    evaluate.add_argument(
        "--part",
        choices=("val", "test"),
        default="test",
        help="which part of the real-world and non-digit suites (default test; val chooses)",
    )
    evaluate.add_argument(
        "--count", type=int, default=None, metavar="N", help="suite pictures per condition or kind (default 300)"
    )
    evaluate.add_argument(
        "--preprocess", metavar="STEPS", help="change the run's preprocessing for --real-world, e.g. no-clean,no-stroke"
    )
    add_device(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    report = commands.add_parser(
        "report",
        help="write RUN/report/index.html: pictures of the data, training, "
        "predictions, calibration and the model's insides",
    )
    report.add_argument("run", help="run folder")
    report.add_argument("--digit", type=int, default=7, help="class index whose training examples are shown")
    report.add_argument("--seed", type=int, default=0, help="seed of the random sample of test digits")
    report.add_argument("--out", metavar="DIR", help="report folder (default RUN/report)")
    add_device(report)
    report.set_defaults(handler=cmd_report)


def cmd_evaluate(args) -> int:
    from ..runs.run import load_run

    run = load_run(args.run, args.device)
    metrics = run.evaluate(args.split, tta=args.tta)
    if args.robustness:
        metrics["robustness"] = run.robustness(args.split)
    if args.real_world:
        metrics["real_world"] = _real_world(run, args)
    if args.non_digits:
        metrics["non_digits"] = run.nondigits(args.part, count=args.count or 300)
    if args.json:
        print(json.dumps({f"{args.split}_accuracy": metrics["accuracy"], "tta": args.tta, **metrics}))
        return 0
    print(
        f"{args.split} accuracy {metrics['accuracy']:.2%} on {metrics['count']:,} images (loss {metrics['loss']:.4f})"
        + (" with test-time augmentation" if args.tta else "")
        + "\n"
    )
    print(f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for row in metrics["per_class"]:
        print(f"{row['class']:>12} {row['precision']:9.4f} {row['recall']:9.4f} {row['f1']:9.4f} {row['support']:8d}")
    print("\nconfusion matrix (rows: true, columns: predicted)")
    for row in metrics["confusion_matrix"]:
        print(" ".join(f"{count:5d}" for count in row))
    if args.robustness:
        print(f"\naccuracy on transformed {args.split} images")
        for name, value in metrics["robustness"].items():
            print(f"{name:>14} {value:8.2%}")
    if args.real_world:
        scores = metrics["real_world"]
        print(
            f"\nreal-world suite ({scores['images']:,} pictures from {scores['part']} digits): "
            f"{scores['overall']:.2%} overall"
        )
        for name, value in scores["conditions"].items():
            refused = scores["refused"][name]
            print(f"{name:>14} {value:8.2%}" + (f"  ({refused} refused)" if refused else ""))
    if args.non_digits:
        scores = metrics["non_digits"]
        print(f"\nnon-digit suite ({scores['part']} part): {scores['turned_away']:.2%} turned away")
        for name, kind in scores["kinds"].items():
            print(f"{name:>14} {kind['turned_away']:8.2%}")
    return 0


def _real_world(run, args) -> dict:
    """Score the suite; record it in the run's metrics.json (under its part) when the run has a folder."""
    from ..files import write_json
    from ..inference.realworld import DEFAULT_COUNT
    from ..runs.run import METRICS_FILE

    options = run.preprocess.with_steps(args.preprocess) if args.preprocess else None
    scores = run.real_world(args.part, count=args.count or DEFAULT_COUNT, preprocess=options)
    if run.path is not None:
        run.metrics.setdefault("real_world", {})[args.part] = scores
        write_json(run.path / METRICS_FILE, run.metrics)
    return scores


def cmd_report(args) -> int:
    from ..runs.report import write_report

    print(write_report(args.run, digit=args.digit, seed=args.seed, out=args.out, device=args.device))
    return 0
