"""Commands that read pictures with a run: predict (files, folders, whole numbers, on Ray) and calibrate (its
'not a digit' detector)."""

from __future__ import annotations

import contextlib
import json
import sys

from ..errors import ConfigError
from .common import add_device, log


def add_parsers(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="classify image files (photos, scans) with a run's model, "
        "or with the model shipped with digitlab; '?' marks a picture that does not look like a digit",
    )
    predict.add_argument(
        "paths",
        nargs="+",
        metavar="[RUN] PATH",
        help="a run folder (or a model .safetensors file) first, then image files or folders of "
        "them; without a run, the shipped model reads them",
    )
    predict.add_argument("--json", action="store_true", help="print a JSON list, one object per input (in order)")
    predict.add_argument(
        "--top-k", type=int, default=1, metavar="K", help="also show the K most likely classes (default 1)"
    )
    predict.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the model over each digit shifted by 1 px (4 ways) and "
        "rotated by ±8° (never flipped); 7 forward passes per digit",
    )
    predict.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 image the model saw per file")
    predict.add_argument("--batch-size", type=int, default=512, help="images per forward pass (default 512)")
    predict.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="threads that decode and preprocess pictures (default: up to 4, one per core); with --engine ray, "
        "Ray actors, each with its own model (default: one per CPU of the cluster)",
    )
    predict.add_argument(
        "--preprocess",
        metavar="STEPS",
        help="change the run's preprocessing steps: flatten, clean, stroke, deskew (no-STEP "
        "switches one off), or legacy",
    )
    predict.add_argument(
        "--number",
        action="store_true",
        help="read each picture as a whole number of several digits (2026, a phone number): "
        "the number and each digit's confidence; with --json, boxes too",
    )
    predict.add_argument(
        "--number-reader",
        choices=("line", "segmenter"),  # runs.run.NUMBER_READERS, spelt out: importing it would load torch for --help
        default="line",
        help="with --number: read each line whole with the line reader (line, the default), or cut touching "
        "digits apart where the segmenter reads the parts best (segmenter: slower)",
    )
    predict.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: threads on this machine; ray: Ray Data actors on a Ray cluster (pip install "
        "'digitlab[ray]'), each file one row in --out; PATH may then be a folder, a glob or a list file",
    )
    predict.add_argument(
        "--address",
        metavar="ADDR",
        help="with --engine ray: the Ray head's host:port (default: start a local Ray for this job)",
    )
    predict.add_argument(
        "--out",
        metavar="FILE",
        help="with --engine ray: the results, .parquet or .jsonl (one row per file: label, confidence, "
        "rejected and reason, number and boxes, error)",
    )
    add_device(predict)
    predict.set_defaults(handler=cmd_predict)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit a run's 'not a digit' detector (training digits, "
        "threshold on validation) and store it in its model file",
    )
    calibrate.add_argument("run", help="run folder")
    calibrate.add_argument(
        "--quantile",
        type=float,
        default=None,
        metavar="Q",
        help="share of validation digits the threshold accepts (default 0.995)",
    )
    calibrate.add_argument(
        "--learn",
        action="store_true",
        help="teach it from pictures that are not digits, as predict reads them: fine-tune the model with them "
        "mixed in (outlier exposure), then fit a learned judge (needs digitlab[suites] and the suite's fonts)",
    )
    calibrate.add_argument(
        "--epochs", type=int, default=2, help="with --learn: fine-tuning passes (default 2; 0: none)"
    )
    calibrate.add_argument(
        "--digits", type=int, default=250, metavar="N", help="with --learn: digits rendered per condition (default 250)"
    )
    calibrate.add_argument(
        "--nondigits", type=int, default=2000, metavar="N", help="with --learn: non-digits of each kind (default 2000)"
    )
    add_device(calibrate)
    calibrate.set_defaults(handler=cmd_calibrate)


def cmd_predict(args) -> int:
    from ..inference.predict import WORKERS, save_preprocessed

    if args.engine == "ray":
        return _predict_with_ray(args)
    if args.address or args.out:
        raise ConfigError("--address and --out go with --engine ray")
    run, paths = _run_and_paths(args.paths, args.device)
    options = run.preprocess.with_steps(args.preprocess) if args.preprocess else None
    if run.ood is None:
        log(
            "digitlab: note: this model has no not-a-digit detector, so every picture with ink gets a digit "
            "(digitlab calibrate RUN gives it one)"
        )
    if args.number:
        return _read_numbers(run, paths, args, options)
    with _progress_bar() as progress:
        results = run.predict(
            paths,
            top_k=args.top_k,
            batch_size=args.batch_size,
            errors="collect",
            preprocess=options,
            workers=args.workers or WORKERS,
            progress=progress,
            tta=args.tta,
        )
    if args.save_preprocessed:
        save_preprocessed(results, args.save_preprocessed)
    for result in results:
        if not result.ok:
            log(f"digitlab: error: {result.source}: {result.error}")
    if args.json:
        print(json.dumps([result.to_dict() for result in results]))
    else:
        _print_predictions([result for result in results if result.ok], args.top_k)
    return 0 if all(result.ok for result in results) else 1


def _run_and_paths(items: list[str], device: str = "cpu"):
    """The run named first, loaded, and the pictures after it; the shipped model and every item when the first
    is a picture or a folder of pictures (see _split_run)."""
    from ..runs.run import load_run
    from ..runs.shipped import load_shipped

    run, paths = _split_run(items)
    return (load_shipped(device) if run is None else load_run(run, device)), paths


def _split_run(items: list[str]):
    """The run named first (a folder holding a model file, or a .safetensors file), or None, and the pictures
    after it. A first item that does not exist and is not named like a picture (nor a glob) is taken for a
    mistyped run folder."""
    from pathlib import Path

    from ..errors import RunError
    from ..images.preprocess import IMAGE_SUFFIXES
    from ..runs.run import MODEL_FILE

    first = Path(items[0])
    globbed = any(mark in items[0] for mark in "*?[")
    if not first.exists() and first.suffix.lower() not in IMAGE_SUFFIXES and not globbed and len(items) > 1:
        raise RunError(f"no run folder at {first}")
    if (first / MODEL_FILE).is_file() or (first.suffix == ".safetensors" and first.is_file()):
        if len(items) == 1:
            raise ConfigError("no pictures given after the run")
        return first, items[1:]
    return None, items


def _predict_with_ray(args) -> int:
    """--engine ray: every file one row in --out, a progress bar, one summary line; exit 1 if a file failed."""
    from ..runs.batch import read_with_ray

    if not args.out:
        raise ConfigError("--engine ray writes its answers to a file: add --out results.parquet (or .jsonl)")
    if args.json or args.top_k != 1 or args.tta or args.save_preprocessed:
        raise ConfigError("--engine ray cannot be combined with --json, --top-k, --tta or --save-preprocessed")
    run, sources = _split_run(args.paths)
    with _progress_bar() as progress:
        summary = read_with_ray(
            sources,
            args.out,
            run=run,
            address=args.address,
            workers=args.workers,
            number=args.number,
            preprocess=args.preprocess,
            batch_size=args.batch_size,
            progress=progress,
        )
    print(summary.line())
    return 1 if summary.errors else 0


@contextlib.contextmanager
def _progress_bar():
    """A progress callback for predict: a bar on stderr once a folder takes more than 2 s, only on a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=0, unit="image", delay=2, file=sys.stderr, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def _print_predictions(results, top_k: int) -> None:
    """The table; a rejected picture shows '?' and why, in place of its label (it is an answer, not an error)."""
    if not results:
        return
    width = max(len("file"), *(len(result.source) for result in results))
    extra = f"  top {top_k}" if top_k > 1 else ""
    print(f"{'file':<{width}}  {'label':>5}  {'confidence':>10}{extra}")
    for result in results:
        if result.rejected:
            print(f"{result.source:<{width}}  {'?':>5}  {result.rejection}")
            continue
        ranked = "  " + ", ".join(f"{label} {p:.1%}" for label, p in result.top_k) if top_k > 1 else ""
        print(f"{result.source:<{width}}  {result.label:>5}  {result.confidence:>10.1%}{ranked}")


def _read_numbers(run, paths, args, options) -> int:
    from ..errors import ConfigError

    if args.top_k != 1 or args.save_preprocessed:
        raise ConfigError("--number cannot be combined with --top-k or --save-preprocessed")
    readings = run.read_number(paths, errors="collect", preprocess=options, reader=args.number_reader)
    for reading in readings:
        if not reading.ok:
            log(f"digitlab: error: {reading.source}: {reading.error}")
    if args.json:
        print(json.dumps([reading.to_dict() for reading in readings]))
    else:
        _print_numbers([reading for reading in readings if reading.ok])
    return 0 if all(reading.ok for reading in readings) else 1


def _print_numbers(readings) -> None:
    if not readings:
        return
    width = max(len("file"), *(len(reading.source) for reading in readings))
    number_width = max(len("number"), *(len(reading.number) for reading in readings))
    print(f"{'file':<{width}}  {'number':>{number_width}}  {'confidence':>10}  digits")
    for reading in readings:
        digits = ", ".join(f"{digit.label} {digit.confidence:.1%}" for digit in reading.digits)
        print(f"{reading.source:<{width}}  {reading.number:>{number_width}}  {reading.confidence:>10.1%}  {digits}")


def cmd_calibrate(args) -> int:
    from ..errors import RunError
    from ..inference.ood import QUANTILE
    from ..runs.run import load_run

    run = load_run(args.run, args.device)
    if run.path is None:
        raise RunError(f"{args.run}: calibrate needs a run folder (it rewrites RUN/model.safetensors)")
    if args.learn:
        return _learn_rejection(run, args)
    detector = run.calibrate_ood(args.quantile or QUANTILE)
    print(
        f"{run.path}: 'not a digit' above score {detector.threshold:.2f} "
        f"(accepts {detector.quantile:.1%} of validation digits); stored in {run.path}/model.safetensors"
    )
    return 0


def _learn_rejection(run, args) -> int:
    from ..inference.ood import QUANTILE
    from ..training.outliers import Exposure, teach_run

    report = teach_run(
        run,
        args.digits,
        args.nondigits,
        Exposure(epochs=args.epochs),
        args.quantile or QUANTILE,
        log=lambda message: print(message, file=sys.stderr),
    )
    kinds = ", ".join(f"{kind} {share:.0%}" for kind, share in report["val_turned_away"].items() if kind != "all")
    print(
        f"{run.path}: validation non-digits {report['val_turned_away']['all']:.1%} turned away ({kinds}); "
        f"validation accuracy {report['val_accuracy']:.2%}, test {report['test_accuracy']:.2%}; "
        f"stored in {run.path}/model.safetensors"
    )
    return 0
