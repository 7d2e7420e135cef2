"""A bounded load on the web demo's POST /api/predict (or /api/explain): throughput, latency percentiles, errors.

Starts `digitlab serve RUN --port 0` in a subprocess on 127.0.0.1 (or uses --url), then sends
--requests requests (default 2,000) from --concurrency threads (default 16), each with its own
keep-alive connection, stopping early at --time-cap seconds. The requests carry, in turn, the first
--digits MNIST test images (default 20, every class) drawn as the page's canvas sends them, 280×280
white on black, as a base64 PNG in JSON (--mode json, what the browser does) or as a file upload
(--mode upload). Only a right answer counts: HTTP 200 with the label the run gives the same picture
in-process (with --url and no RUN: the MNIST label). Throughput and latency are over right answers
alone; the rest are reported as their own figures: wrong answers, sheds (503) and errors (any other
status, or no answer). The served answers' accuracy against the MNIST labels is reported too, with a
floor (--accuracy-floor, default 0.9; a model that answers one class scores about 0.1). A warm-up of
50 requests runs first and is not counted.

    python benchmarks/serve_load.py RUN [--requests 2000] [--concurrency 16] [--mode json] [--workers N]
    python benchmarks/serve_load.py RUN --serve-args "--max-batch 1"   # any other `digitlab serve` options
    python benchmarks/serve_load.py --url http://127.0.0.1:8000

With --against SRC (the src folder of another checkout, e.g. main's), the same benchmark first runs whole
with SRC first on the path (its server, its own in-process answers), just before this one, and its figures
go into the file beside these ("against") with the speed-up: the ratio measured side by side.

writes benchmarks/results/serve_load.json and exits 1 if any answer was not right (wrong, shed or an error),
the accuracy is under the floor, or the cap cut the run short.
The client runs on the same machine as the server and takes part of its CPU.

--route explain sends the page's live-view request, POST /api/explain (hidden layers, saliency, top 3),
and writes benchmarks/results/serve_explain_<model>.json with the answer's size. The issue's goals,
on 2 cores at concurrency 4: p99 <= 50 ms for the seed MLP, <= 150 ms for the shipped CNN:

    taskset -c 0,1 python benchmarks/serve_load.py RUN_OF_THE_SEED_MLP --route explain --concurrency 4 --requests 500
    taskset -c 0,1 python benchmarks/serve_load.py src/digitlab/weights/digitlab-cnn-robust.safetensors \
        --route explain --concurrency 4 --requests 500
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import digitlab
from digitlab.images import decode_image

RESULTS = Path(__file__).parent / "results" / "serve_load.json"
WARM_UP = 50
BOUNDARY = "digitlab-load"


def digit_png(index: int = 0) -> tuple[bytes, str]:
    """MNIST test image `index` as the page's canvas would send it: 280×280 PNG, white ink on black; and its label."""
    test = digitlab.load_dataset("mnist").test
    picture = Image.fromarray(test.images[index, 0].numpy()).resize((280, 280), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.convert("RGBA").save(buffer, format="PNG")
    return buffer.getvalue(), str(int(test.labels[index]))


@dataclass(frozen=True)
class Item:
    """One request to send again and again: its body, the answer expected, and the MNIST label."""

    body: bytes
    expected: str
    truth: str


def items(run: str | None, count: int, mode: str) -> tuple[list[Item], dict]:
    """The first `count` test digits as request bodies, expecting what `run` answers in-process through
    digitlab.inference, as `digitlab predict` does, not through the server's code (or, without a run, the MNIST
    label); and the headers they go with."""
    loaded = digitlab.load_run(run) if run else None
    found, headers = [], {}
    for index in range(count):
        png, truth = digit_png(index)
        body, headers = request_body(png, mode)
        expected = loaded.predict([decode_image(png, "digit")])[0].label if loaded else truth
        found.append(Item(body, expected, truth))
    return found, headers


def request_body(png: bytes, mode: str) -> tuple[bytes, dict]:
    if mode == "json":
        body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()
        return body, {"Content-Type": "application/json"}
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="seven.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def start_server(run: str, options: list[str] = ()) -> tuple[subprocess.Popen, str]:
    """`digitlab serve RUN --port 0 OPTIONS`; returns the process and its URL once /healthz answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "serve", run, "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = server.stdout.readline()
    match = re.search(r"http://\S+", line)
    if not match:
        server.kill()
        sys.exit(f"serve_load: the server did not start: {line}{server.stderr.read()}")
    with urllib.request.urlopen(f"{match[0]}/healthz", timeout=30) as response:
        response.read()
    return server, match[0]


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time so far of a process and its children (server workers), from Linux /proc,
    or None where that cannot be read."""
    try:
        children = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
        family = [pid] + [child for child in children if _parent(child) == pid]
        return sum(int(_stat(one)[11]) + int(_stat(one)[12]) for one in family) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _parent(pid: int) -> int | None:
    try:
        return int(_stat(pid)[1])
    except (OSError, ValueError, IndexError):  # it went away, or is not ours to read
        return None


def load(
    url: str,
    work: list[Item],
    headers: dict,
    count: int,
    concurrency: int,
    time_cap: float,
    route: str = "/api/predict",
) -> dict:
    """Send `count` requests to `route` (the items in turn) from `concurrency` threads (one keep-alive connection
    each) until done or time_cap; only right answers count as throughput (see the module)."""
    address = urllib.parse.urlsplit(url)
    next_index, lock, answer_bytes = [0], threading.Lock(), [0]
    latencies: list[float] = []  # of right answers only
    outcomes: Counter = Counter()  # right, wrong, shed, error
    errors: list[str] = []
    served_right = [0, 0]  # answers equal to the MNIST label, answers with a label
    deadline = time.monotonic() + time_cap

    def take() -> int | None:
        with lock:
            if next_index[0] >= count or time.monotonic() > deadline:
                return None
            next_index[0] += 1
            return next_index[0] - 1

    def worker():
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        while (index := take()) is not None:
            item = work[index % len(work)]
            start = time.perf_counter()
            label, problem = None, None
            try:
                connection.request("POST", route, body=item.body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                elapsed = time.perf_counter() - start
                answer_bytes[0] = len(answer)
                if response.status == 200:
                    label = json.loads(answer)["label"]
                    outcome = "right" if label == item.expected else "wrong"
                    if outcome == "wrong":
                        problem = f"label {label!r}, expected {item.expected!r}"
                else:
                    outcome = "shed" if response.status == 503 else "error"
                    problem = f"HTTP {response.status}: {answer[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
                elapsed, outcome, problem = time.perf_counter() - start, "error", f"{type(error).__name__}: {error}"
                connection.close()
                connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
            with lock:
                outcomes[outcome] += 1
                if outcome == "right":
                    latencies.append(elapsed)
                if label is not None:
                    served_right[0] += label == item.truth
                    served_right[1] += 1
                if problem:
                    errors.append(problem)
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    milliseconds = np.array(latencies or [np.nan]) * 1000
    return {
        "requests": outcomes.total(),
        "right_answers": outcomes["right"],
        "wrong_answers": outcomes["wrong"],
        "shed_503": outcomes["shed"],
        "errors": outcomes["error"],
        "wall_seconds": wall,
        "throughput_per_second": outcomes["right"] / wall,  # right answers only
        "latency_ms": {  # of right answers only
            "mean": float(np.mean(milliseconds)),
            "p50": float(np.percentile(milliseconds, 50)),
            "p90": float(np.percentile(milliseconds, 90)),
            "p99": float(np.percentile(milliseconds, 99)),
            "max": float(np.max(milliseconds)),
        },
        "accuracy_of_answers": served_right[0] / served_right[1] if served_right[1] else None,
        "first_problems": errors[:5],
        "answer_bytes": answer_bytes[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="run folder to serve (with --url: the run it serves, for the answers)")
    parser.add_argument("--url", help="an already running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=2000, help="requests to send (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--time-cap", type=float, default=120.0, help="stop sending after this many seconds")
    parser.add_argument("--mode", choices=("json", "upload"), default="json", help="base64 JSON or multipart upload")
    parser.add_argument("--digits", type=int, default=20, help="distinct test digits sent in turn (default 20)")
    parser.add_argument("--accuracy-floor", type=float, default=0.9, help="least accuracy of the answers (0.9)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (digitlab serve --workers)")
    parser.add_argument("--serve-args", default="", help='more `digitlab serve` options, e.g. "--max-batch 1"')
    parser.add_argument(
        "--route", choices=("predict", "explain"), default="predict", help="POST /api/predict or /api/explain"
    )
    parser.add_argument(
        "--out", type=Path, help=f"results file (default {RESULTS}; serve_explain_<model>.json for --route explain)"
    )
    parser.add_argument("--against", type=Path, help="src folder of another digitlab checkout, run just before")
    args = parser.parse_args()
    if not args.run and not args.url:
        parser.error("give a RUN to serve, or the --url of a running server")
    if args.requests < 1 or args.concurrency < 1 or args.digits < 10:
        parser.error("--requests and --concurrency must be at least 1, --digits at least 10")

    against = run_against(args.against) if args.against else None
    work, headers = items(args.run, args.digits, args.mode)
    load_before = os.getloadavg()[0]  # other work on the machine skews the figures: keep a note of it
    options = (["--workers", str(args.workers)] if args.workers != 1 else []) + shlex.split(args.serve_args)
    server, url = start_server(args.run, options) if not args.url else (None, args.url.rstrip("/"))
    try:
        with urllib.request.urlopen(f"{url}/api/model", timeout=30) as response:
            about = json.loads(response.read())
        route = f"/api/{args.route}"
        load(url, work, headers, WARM_UP, min(args.concurrency, WARM_UP), args.time_cap, route)
        cpu_before = cpu_seconds(server.pid) if server else None
        result = load(url, work, headers, args.requests, args.concurrency, args.time_cap, route)
        cpu_after = cpu_seconds(server.pid) if server else None
    finally:
        if server:
            server.terminate()
            server.wait(10)
    report = {
        "benchmark": "serve_load",
        "route": route,
        "mode": args.mode,
        "payload_bytes": max(len(item.body) for item in work),
        "digits": args.digits,
        "expected": "the run's own answers in-process" if args.run else "the MNIST labels",
        "concurrency": args.concurrency,
        "requests_asked": args.requests,
        **result,
        "accuracy_floor": args.accuracy_floor,
        "server_cpu_ms_per_request": (
            None if cpu_before is None or cpu_after is None else 1000 * (cpu_after - cpu_before) / result["requests"]
        ),
        "server": f"digitlab serve {' '.join(options)}" if server else args.url,
        "model": {key: about[key] for key in ("run", "model", "parameters", "test_accuracy")},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1min_before": load_before,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    if against:
        report["against"] = against
        report["speedup"] = report["throughput_per_second"] / against["throughput_per_second"]
    out = args.out or (
        RESULTS.with_name(f"serve_explain_{about['model']}.json") if args.route == "explain" else RESULTS
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return verdict(report, args, out)


def run_against(source: Path) -> dict:
    """This benchmark, with the same arguments but --against and --out, run whole on the tree at `source`:
    its figures (throughput, latency, server CPU, what was not right, the load before it)."""
    with tempfile.TemporaryDirectory(prefix="serve-load-against-") as folder:
        out = Path(folder) / "against.json"
        arguments = _without(sys.argv[1:], {"--against", "--out"})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source.resolve()), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, __file__, *arguments, "--out", str(out)], env=env, check=False)
        found = json.loads(out.read_text())
    keys = ("throughput_per_second", "latency_ms", "server_cpu_ms_per_request", "requests")
    return {
        "source": str(source),
        **{key: found[key] for key in keys},
        "not_right": found["wrong_answers"] + found["shed_503"] + found["errors"],
        "load_average_1min_before": found["load_average_1min_before"],
    }


def _without(arguments: list[str], options: set[str]) -> list[str]:
    """`arguments` less each of `options` and its value (given as the next word or after '=')."""
    kept, skipping = [], False
    for argument in arguments:
        if skipping:
            skipping = False
        elif argument in options:
            skipping = True
        elif argument.split("=", 1)[0] not in options:
            kept.append(argument)
    return kept


def verdict(report: dict, args: argparse.Namespace, out: Path) -> int:
    """Print the figures; 0 when every answer was right, accurate enough, and the run complete."""
    latency, accuracy = report["latency_ms"], report["accuracy_of_answers"]
    print(
        f"{report['requests']:,} {report['route']} requests ({args.mode}, {args.digits} digits in turn, answers of "
        f"{report['answer_bytes']:,} bytes) at concurrency {args.concurrency} in {report['wall_seconds']:.2f} s: "
        f"{report['throughput_per_second']:.0f} right answers/s, p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms "
        f"(right answers only); {report['wrong_answers']} wrong, {report['shed_503']} shed (503), "
        f"{report['errors']} errors; accuracy {accuracy if accuracy is None else f'{accuracy:.1%}'}"
    )
    if report["server_cpu_ms_per_request"] is not None:
        print(f"server CPU {report['server_cpu_ms_per_request']:.2f} ms per request")
    for problem in report["first_problems"]:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"wrote {out}")
    complete = report["requests"] == args.requests
    if not complete:
        print(
            f"serve_load: the {args.time_cap:.0f} s cap stopped the run after {report['requests']:,} of "
            f"{args.requests:,} requests",
            file=sys.stderr,
        )
    accurate = accuracy is not None and accuracy >= args.accuracy_floor
    if not accurate:
        print(f"serve_load: the answers' accuracy is under the {args.accuracy_floor:.0%} floor", file=sys.stderr)
    return 0 if complete and accurate and report["right_answers"] == report["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
