"""A bounded load on the web demo's POST /api/predict: throughput, latency percentiles, errors.

Starts `digitlab serve RUN --port 0` in a subprocess on 127.0.0.1 (or uses --url), then sends
--requests requests (default 2,000) from --concurrency threads (default 16), each with its own
keep-alive connection, stopping early at --time-cap seconds. Every request carries the same real
digit: MNIST test image 0 (a 7) drawn as the page's canvas sends it, 280×280 white on black, as a
base64 PNG in JSON (--mode json, what the browser does) or as a file upload (--mode upload). A
request counts as an error unless it gets HTTP 200 and the label "7". A warm-up of 50 requests
runs first and is not counted.

    python benchmarks/serve_load.py RUN [--requests 2000] [--concurrency 16] [--mode json] [--workers N]
    python benchmarks/serve_load.py RUN --serve-args "--max-batch 1"   # any other `digitlab serve` options
    python benchmarks/serve_load.py --url http://127.0.0.1:8000

writes benchmarks/results/serve_load.json and exits 1 if any request failed or the cap cut the run short.
The client runs on the same machine as the server and takes part of its CPU.
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
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

import digitlab

RESULTS = Path(__file__).parent / "results" / "serve_load.json"
WARM_UP = 50
BOUNDARY = "digitlab-load"


def digit_png() -> tuple[bytes, str]:
    """MNIST test image 0 as the page's canvas would send it: 280×280 PNG, white ink on black; and its label."""
    test = digitlab.load_dataset("mnist").test
    picture = Image.fromarray(test.images[0, 0].numpy()).resize((280, 280), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.convert("RGBA").save(buffer, format="PNG")
    return buffer.getvalue(), str(int(test.labels[0]))


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


def load(url: str, body: bytes, headers: dict, label: str, count: int, concurrency: int, time_cap: float) -> dict:
    """Send `count` requests from `concurrency` threads (one keep-alive connection each) until done or time_cap."""
    address = urllib.parse.urlsplit(url)
    next_index, lock = [0], threading.Lock()
    latencies, errors = [], []
    deadline = time.monotonic() + time_cap

    def take() -> bool:
        with lock:
            if next_index[0] >= count or time.monotonic() > deadline:
                return False
            next_index[0] += 1
            return True

    def worker():
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        while take():
            start = time.perf_counter()
            try:
                connection.request("POST", "/api/predict", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                elapsed = time.perf_counter() - start
                if response.status != 200:
                    problem = f"HTTP {response.status}: {answer[:200]!r}"
                elif json.loads(answer)["label"] != label:
                    problem = f"label {json.loads(answer)['label']!r}, expected {label!r}"
                else:
                    problem = None
            except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
                elapsed, problem = time.perf_counter() - start, f"{type(error).__name__}: {error}"
                connection.close()
                connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
            with lock:
                latencies.append(elapsed)
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
    milliseconds = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "wall_seconds": wall,
        "throughput_per_second": len(latencies) / wall,
        "latency_ms": {
            "mean": float(milliseconds.mean()),
            "p50": float(np.percentile(milliseconds, 50)),
            "p90": float(np.percentile(milliseconds, 90)),
            "p99": float(np.percentile(milliseconds, 99)),
            "max": float(milliseconds.max()),
        },
        "errors": len(errors),
        "first_errors": errors[:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="run folder to serve (not needed with --url)")
    parser.add_argument("--url", help="an already running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=2000, help="requests to send (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--time-cap", type=float, default=120.0, help="stop sending after this many seconds")
    parser.add_argument("--mode", choices=("json", "upload"), default="json", help="base64 JSON or multipart upload")
    parser.add_argument("--workers", type=int, default=1, help="server processes (digitlab serve --workers)")
    parser.add_argument("--serve-args", default="", help='more `digitlab serve` options, e.g. "--max-batch 1"')
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    if bool(args.run) == bool(args.url):
        parser.error("give a RUN to serve, or the --url of a running server (not both)")
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")

    png, label = digit_png()
    body, headers = request_body(png, args.mode)
    load_before = os.getloadavg()[0]  # other work on the machine skews the figures: keep a note of it
    options = (["--workers", str(args.workers)] if args.workers != 1 else []) + shlex.split(args.serve_args)
    server, url = start_server(args.run, options) if args.run else (None, args.url.rstrip("/"))
    try:
        with urllib.request.urlopen(f"{url}/api/model", timeout=30) as response:
            about = json.loads(response.read())
        load(url, body, headers, label, WARM_UP, min(args.concurrency, WARM_UP), args.time_cap)
        cpu_before = cpu_seconds(server.pid) if server else None
        result = load(url, body, headers, label, args.requests, args.concurrency, args.time_cap)
        cpu_after = cpu_seconds(server.pid) if server else None
    finally:
        if server:
            server.terminate()
            server.wait(10)
    report = {
        "benchmark": "serve_load",
        "mode": args.mode,
        "payload_bytes": len(body),
        "concurrency": args.concurrency,
        "requests_asked": args.requests,
        **result,
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    latency = result["latency_ms"]
    print(
        f"{result['requests']:,} requests ({args.mode}, {len(body):,} bytes each) at concurrency {args.concurrency} "
        f"in {result['wall_seconds']:.2f} s: {result['throughput_per_second']:.0f} requests/s, "
        f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms, max {latency['max']:.1f} ms, "
        f"{result['errors']} errors"
    )
    if report["server_cpu_ms_per_request"] is not None:
        print(f"server CPU {report['server_cpu_ms_per_request']:.2f} ms per request")
    for problem in result["first_errors"]:
        print(f"error: {problem}", file=sys.stderr)
    print(f"wrote {args.out}")
    complete = result["requests"] == args.requests
    if not complete:
        print(
            f"serve_load: the {args.time_cap:.0f} s cap stopped the run after {result['requests']:,} of "
            f"{args.requests:,} requests",
            file=sys.stderr,
        )
    return 0 if complete and result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
