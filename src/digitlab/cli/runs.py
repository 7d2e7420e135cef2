"""Commands that use a trained run: evaluate, report, predict, calibrate, export, serve, ensemble."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from ..errors import ConfigError
from .common import log


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
    _add_device(evaluate)
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
    _add_device(report)
    report.set_defaults(handler=cmd_report)

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
    _add_device(predict)
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
    _add_device(calibrate)
    calibrate.set_defaults(handler=cmd_calibrate)

    export = commands.add_parser(
        "export", help="export a run's model to ONNX or TorchScript, verified, or as a static web page (web)"
    )
    export.add_argument("run", help="run folder (or its model.safetensors)")
    export.add_argument(
        "--format",
        choices=("onnx", "torchscript", "web"),
        default="onnx",
        help="file format (default onnx); web: a folder whose index.html runs the model in the browser, no server",
    )
    export.add_argument(
        "--out",
        metavar="PATH",
        help="destination (default RUN/model.onnx, RUN/model.torchscript.pt or the folder RUN/web)",
    )
    export.set_defaults(handler=cmd_export)

    serve = commands.add_parser("serve", help="web demo: draw a digit in the browser and watch the model decide")
    serve.add_argument(
        "run",
        nargs="*",
        help="run folders (or model.safetensors files) to serve; the page picks one or compares two "
        "(default: the shipped model)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on, 0 = any free port (default 8000)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument(
        "--max-upload-mb",
        type=float,
        default=25,
        metavar="MB",
        help="largest image accepted, in MB (default 25); larger gets 413",
    )
    serve.add_argument(
        "--max-megapixels",
        type=float,
        default=100,
        metavar="MP",
        help="largest image accepted, in megapixels, judged before decoding (default 100)",
    )
    serve.add_argument(
        "--max-decoding", type=int, default=2, metavar="N", help="images decoded at once (default 2); the rest wait"
    )
    serve.add_argument(
        "--max-queued",
        type=int,
        default=16,
        metavar="N",
        help="images waiting to be decoded (default 16); more get 503 with Retry-After",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=30,
        metavar="S",
        help="seconds a request body may take to arrive (default 30); slower gets 408",
    )
    _add_serve_limits(serve)
    serve.add_argument(
        "--token",
        default=os.environ.get("DIGITLAB_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on /api/ routes (default: $DIGITLAB_TOKEN, which ps does not "
        "show; none: open)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host is NAME, e.g. the name a reverse proxy forwards (repeatable; '*': any); "
        "loopback and --host always are",
    )
    serve.add_argument(
        "--max-batch", type=int, default=64, metavar="N", help="drawings classified in one forward pass (default 64)"
    )
    serve.add_argument(
        "--max-wait-ms",
        type=float,
        default=2,
        metavar="MS",
        help="how long a forward pass waits for more requests to join it (default 2 ms; 0: no waiting)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes sharing the port, each with its own model and limits (default 1)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads per server process for the forward pass (default 1)",
    )
    _add_device(serve)
    serve.set_defaults(handler=cmd_serve)

    ensemble = commands.add_parser(
        "ensemble",
        help="average the probabilities of several runs' models into one run folder "
        "(scored on validation and test, with and without --tta)",
    )
    ensemble.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders of the same dataset")
    ensemble.add_argument("--out", metavar="DIR", help="run folder to write (default runs/ensemble-<timestamp>)")
    ensemble.add_argument("--json", action="store_true", help="print the ensemble's metrics as one JSON object")
    _add_device(ensemble)
    ensemble.set_defaults(handler=cmd_ensemble)


def _add_device(parser) -> None:
    from ..config import DEVICES

    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the model runs (default auto: cuda, then mps, then cpu)",
    )


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


def cmd_export(args) -> int:
    from ..export.onnx import export_model
    from ..export.web import export_web

    if args.format == "web":
        page = export_web(args.run, out=args.out, log=lambda message: print(message, file=sys.stderr))
        print(
            f"wrote {page['path']}/index.html ({len(page['files'])} files, {page['bytes'] / 1e6:.1f} MB) — the model "
            f"verified against PyTorch on {page['count']:,} test digits; open it from disk or any static host"
        )
        return 0
    report = export_model(args.run, args.format, out=args.out)
    print(
        f"wrote {report['path']} — verified against PyTorch on {report['count']:,} test digits: "
        f"max |logit difference| {report['max_abs_diff']:.2g}, identical predictions"
    )
    return 0


def cmd_serve(args) -> int:
    from ..runs.run import require_segmenter
    from ..serving.app import Limits, serve

    require_segmenter()  # /api/number needs it: a broken installation stops here, not at a request
    limits = Limits(
        max_upload_bytes=round(args.max_upload_mb * 1e6),
        max_pixels=round(args.max_megapixels * 1e6),
        max_decode_bytes=round(args.max_decode_mb * 1e6),
        max_decoding=args.max_decoding,
        max_queued=args.max_queued,
        max_body_memory_bytes=round(args.max_body_memory_mb * 1e6),
        body_timeout_s=args.body_timeout,
        body_grace_s=args.body_grace,
        body_min_rate=args.body_min_rate * 1000,
        max_header_bytes=round(args.max_header_kb * 1024),
        header_timeout_s=args.header_timeout,
        keep_alive_s=args.keep_alive,
        max_connections=args.max_connections,
        max_client_connections=args.max_client_connections,
        max_json_depth=args.max_json_depth,
        max_json_items=args.max_json_items,
        max_json_number_chars=args.max_json_number_chars,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    serve(
        args.run or None,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        on_ready=lambda message: print(message, flush=True),
        limits=limits,
        workers=args.workers,
        threads=args.threads,
        device=args.device,
        token=args.token,
        hosts=args.allowed_host,
    )
    return 0


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    """The limits of serving beyond upload size, queue and body time (digitlab.serving.limits; docs/serving.md)."""
    for flag, kind, default, metavar, text in (
        (
            "--max-decode-mb",
            float,
            160,
            "MB",
            "memory the images being decoded may hold at once, estimated from "
            "their headers (default 160); one that needs more gets 413, the others wait",
        ),
        (
            "--max-body-memory-mb",
            float,
            200,
            "MB",
            "request bodies held at once, all clients (default 200; one client: half); more gets 503",
        ),
        ("--body-grace", float, 10, "S", "seconds before a body's first byte must arrive (default 10), or 408"),
        ("--body-min-rate", float, 10, "KB/S", "average kB a second a body must keep up after that (default 10)"),
        ("--max-header-kb", float, 16, "KB", "request line and headers (default 16); more gets 400"),
        ("--header-timeout", float, 10, "S", "seconds a request's headers may take (default 10), or 408"),
        ("--keep-alive", float, 5, "S", "seconds an idle keep-alive connection stays open (default 5)"),
        ("--max-connections", int, 512, "N", "open connections and requests at once (default 512); more get 503"),
        (
            "--max-client-connections",
            int,
            64,
            "N",
            "open connections of one client address (default 64; behind a "
            "reverse proxy, every client is the proxy); more are closed",
        ),
        ("--max-json-depth", int, 4, "N", "nesting of a JSON body (default 4); deeper gets 400"),
        ("--max-json-items", int, 32, "N", "keys and values in a JSON body (default 32); more gets 400"),
        ("--max-json-number-chars", int, 64, "N", "characters in a JSON number (default 64); longer gets 400"),
    ):
        serve.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)


def cmd_ensemble(args) -> int:
    from ..runs.ensemble import build_ensemble

    run = build_ensemble(args.runs, out=args.out, device=args.device)
    metrics = run.metrics
    if args.json:
        print(
            json.dumps(
                {
                    "run": str(run.path),
                    **{key: metrics[key] for key in ("val_accuracy", "test_accuracy", "tta", "members")},
                }
            )
        )
        return 0
    percent = lambda value: "-" if value is None else f"{value:.2%}"  # noqa: E731
    for member in metrics["members"]:
        print(f"{member['run']}: validation {percent(member['val_accuracy'])}, test {percent(member['test_accuracy'])}")
    print(
        f"ensemble of {len(metrics['members'])}: validation {percent(metrics['val_accuracy'])}, test "
        f"{percent(metrics['test_accuracy'])}; with --tta: validation {percent(metrics['tta']['val_accuracy'])}, "
        f"test {percent(metrics['tta']['test_accuracy'])}"
    )
    print(f"run saved to {run.path}")
    return 0
