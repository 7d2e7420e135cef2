"""Where a /api/predict request's time goes, stage by stage, in-process (CPU time, so other load skews it less).

The request is the one benchmarks/serve_load.py sends: MNIST test image 0 drawn as the page's canvas
sends it (280×280 PNG in base64 JSON). Each stage runs --repeat times (default 200) and its CPU
milliseconds per request are recorded, best of --rounds (default 5) rounds: reading the JSON and the
base64, checking the picture's header, decoding the PNG, recognising it as a drawing, the drawing path
(digitlab.images.drawing) alone and as one of 16 in a batch, the forward pass alone and as one of 16,
building the answer and encoding it as JSON. What is left of the server's CPU per request (serve_load.py's
`server_cpu_ms_per_request`) beyond these is HTTP, ASGI and thread hand-offs.

    python benchmarks/serve_profile.py [RUN] [--repeat 200] [--rounds 5] [--threads 1]   (no RUN: the shipped CNN)

writes benchmarks/results/serve_profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from digitlab.images.preprocess import as_drawing, decode_image, inspect_image, prepare, prepare_drawings
from digitlab.inference.predict import Prediction, classify_prepared
from digitlab.runs.shipped import resolve_run
from digitlab.serving.app import Limits, answer_of
from digitlab.serving.body import from_json
from serve_load import digit_png, request_body

RESULTS = Path(__file__).parent / "results" / "serve_profile.json"


def cpu_ms(work, repeat: int, rounds: int, per: int = 1) -> float:
    """CPU milliseconds of one call of `work` (divided by `per` items), best of `rounds` rounds."""
    work()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeat):
            work()
        best = min(best, (time.process_time() - start) / repeat)
    return 1000 * best / per


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="run folder (or model file); default: the shipped model")
    parser.add_argument("--repeat", type=int, default=200, help="calls per round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best counts (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as digitlab serve --threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = resolve_run(args.run)
    run.model.eval()
    png, _ = digit_png()
    body, _ = request_body(png, "json")
    data, source = from_json(body, Limits())
    picture = decode_image(data)
    prepared = prepare(picture, run.preprocess)
    one = prepared.image[None]
    sixteen = one.expand(16, -1, -1, -1).contiguous()
    predicted = classify_prepared(run.model, one, [Prediction(source, box=prepared.box)], run.classes)[0]
    answer = answer_of(predicted)
    measure = lambda work, per=1: round(cpu_ms(work, args.repeat, args.rounds, per), 3)  # noqa: E731

    drawing = as_drawing(picture, run.preprocess)
    assert drawing is not None, "the page's canvas is a drawing"

    stages = {
        "read JSON and base64": measure(lambda: from_json(body, Limits())),
        "check the header": measure(lambda: inspect_image(data)),
        "decode the PNG": measure(lambda: decode_image(data)),
        "recognise a drawing": measure(lambda: as_drawing(picture, run.preprocess)),
        "drawing path, alone": measure(lambda: prepare_drawings([drawing], run.preprocess)),
        "drawing path, one of a batch of 16": measure(lambda: prepare_drawings([drawing] * 16, run.preprocess), per=16),
        "forward pass, alone": measure(
            lambda: classify_prepared(run.model, one, [Prediction(source, box=prepared.box)], run.classes)
        ),
        "forward pass, one of a batch of 16": measure(
            lambda: classify_prepared(
                run.model, sixteen, [Prediction(source, box=prepared.box) for _ in range(16)], run.classes
            ),
            per=16,
        ),
        "build the answer": measure(lambda: answer_of(predicted)),
        "encode the answer as JSON": measure(lambda: json.dumps(answer)),
    }
    report = {
        "benchmark": "serve_profile",
        "unit": "CPU milliseconds per request, best of rounds",
        "repeat": args.repeat,
        "rounds": args.rounds,
        "payload_bytes": len(body),
        "stages_cpu_ms": stages,
        "model": {"run": run.path.name if run.path else None, "model": run.config.model},
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_before": os.getloadavg()[0],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for stage, milliseconds in stages.items():
        print(f"{stage:45s} {milliseconds:8.3f} ms")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
