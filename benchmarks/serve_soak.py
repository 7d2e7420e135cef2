"""A bounded soak of the web demo: a mix of good and bad requests from many clients, at a load it should hold.

Starts `digitlab serve RUN --port 0` on 127.0.0.1 with a 1 MB upload limit and a 2 s body timeout (so
oversized and slow bodies cost the client little), measures its capacity first (right answers a second
to drawings sent by --clients threads in a closed loop for --capacity-seconds), then offers --load times
that many requests a second (default 0.7) for --seconds (default 60) from --clients threads (default 32),
one connection per request (--requests sets the count instead). Each request is drawn (seeded) from this mix:

    drawing    62%  an MNIST test digit drawn as the page's canvas sends it (base64 PNG in JSON)
    upload     15%  a real-world rendering of a test digit (paper, pencil, photo...) as a file upload
    garbage     6%  random bytes uploaded as an image              -> 422
    bad JSON    4%  a JSON body that does not parse                 -> 400
    truncated   6%  a drawing's PNG cut in half                     -> 422
    oversized   5%  a body over the limit, declared or streamed     -> 413
    slow        2%  a drawing sent one byte every 50 ms             -> 408

A good request may get the intended 503 (the queue is full: load shed at once); a bad one never: each
is refused with its own 4xx before it takes a place in the queue. The expected answer for a good picture
is the label `digitlab predict` gives it in-process (the server must give the model's answer), and the
served drawings' accuracy against the MNIST labels must reach --accuracy-floor (default 0.9: a model that
answers one class scores about 0.1). Only right answers count as throughput; wrong answers, sheds (503)
and errors are their own figures. Recorded: capacity and offered load, outcomes by kind and status, the
shed share, p50/p99 latency of the right answers per tenth of the run, and the server's memory (RSS of
the server and its workers) at the start, at the 1,000th request (or a quarter of them) and at the end.

    python benchmarks/serve_soak.py RUN [--seconds 60] [--load 0.7] [--clients 32] [--workers N]

writes benchmarks/results/serve_soak.json; exits 1 unless: 0 wrong answers, 0 server errors (5xx other
than 503), every bad request refused with its own 4xx (none shed), no good request refused otherwise, no
failed connection, the shed share at most --shed-ceiling (default 1%) when the offered load is at most
HOLD_LOAD (0.8) of capacity (above it, shedding is expected and only reported), the drawings' accuracy
at least the floor, and RSS grown by at most 10% from the reference request to the last.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import random
import select
import shlex
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

import digitlab
from digitlab.images import decode_image
from digitlab.inference.realworld import CONDITIONS
from serve_load import Item, load, start_server

RESULTS = Path(__file__).parent / "results" / "serve_soak.json"
MIX = {"drawing": 62, "upload": 15, "garbage": 6, "bad_json": 4, "truncated": 6, "oversized": 5, "slow": 2}
EXPECTED = {"garbage": 422, "bad_json": 400, "truncated": 422, "oversized": 413, "slow": 408}
SERVER_OPTIONS = ["--max-upload-mb", "1", "--body-timeout", "2"]
UPLOAD_LIMIT = 1_000_000
REFERENCE_REQUEST = 1000  # memory growth is measured from this request to the last
HOLD_LOAD = 0.8  # offered load (share of measured capacity) the server should hold without shedding
BOUNDARY = "digitlab-soak"


def canvas_png(digit: np.ndarray) -> bytes:
    """An MNIST digit as the page's canvas sends it: 280×280 RGBA PNG, white on black."""
    buffer = io.BytesIO()
    Image.fromarray(digit).resize((280, 280), Image.Resampling.BILINEAR).convert("RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def pictures(run: str, count: int) -> dict[str, list[tuple[bytes, str, str]]]:  # (bytes, expected, truth)
    """(file bytes, expected label, true label) for `count` drawings and count // 4 uploads of test digits."""
    test = digitlab.load_dataset("mnist").test
    loaded = digitlab.load_run(run)
    rng = np.random.default_rng(0)
    drawings = [(canvas_png(test.images[i, 0].numpy()), str(int(test.labels[i]))) for i in range(count)]
    renders = list(CONDITIONS.values())
    uploads = [
        (renders[i % len(renders)](test.images[i, 0].numpy(), rng)[0], str(int(test.labels[i])))
        for i in range(count // 4)
    ]
    return {
        kind: [(data, expected, truth) for data, truth in items if (expected := _label(loaded, data)) is not None]
        for kind, items in (("drawing", drawings), ("upload", uploads))
    }


def _label(run, data: bytes) -> str | None:
    """The label `digitlab predict` gives the picture in-process (through digitlab.inference, not the server's code),
    or None for one it cannot read (left out)."""
    try:
        return run.predict([decode_image(data, "picture")])[0].label
    except digitlab.ImageError:
        return None


def multipart(data: bytes, name: str = "picture.png") -> tuple[bytes, str]:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def drawing_json(png: bytes) -> bytes:
    return json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()


def send(port: int, body: bytes, kind: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/api/predict", body=body, headers={"Content-Type": kind})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def raw(port: int, head: bytes, chunks, pause: float = 0.0) -> tuple[int, bytes]:
    """Send `head` then each chunk (stopping once the server has answered), and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(head)
        for chunk in chunks:
            if _readable(connection):
                break
            try:
                connection.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the server answered and closed: read the answer
                break
            time.sleep(pause)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) >= _declared(data):
                break
    head_part, _, body = data.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), body


def _readable(connection: socket.socket) -> bool:
    return bool(select.select([connection], [], [], 0)[0])


def _declared(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


Outcome = tuple[int, str | None, str | None, str | None]  # status, label answered, label expected, MNIST label


def one_request(port: int, kind: str, rng: random.Random, good: dict) -> Outcome:
    """Send one request of `kind`; returns (status, label answered, the label expected, the MNIST label), the
    labels None for a bad request."""
    if kind in ("drawing", "upload"):
        data, expected, truth = rng.choice(good[kind])
        body, content = (drawing_json(data), "application/json") if kind == "drawing" else multipart(data)
        status, answer_bytes = send(port, body, content)
        return status, json.loads(answer_bytes).get("label") if status == 200 else None, expected, truth
    if kind == "garbage":
        return send(port, *multipart(rng.randbytes(rng.randint(1, 20_000)), "garbage.png"))[0], None, None, None
    if kind == "bad_json":
        return send(port, b'{"image": "abc', "application/json")[0], None, None, None
    if kind == "truncated":
        data = rng.choice(good["drawing"])[0]
        return send(port, *multipart(data[: len(data) // 2]))[0], None, None, None
    if kind == "oversized":
        body, content = multipart(rng.randbytes(UPLOAD_LIMIT + 100_000))
        if rng.random() < 0.5:  # declared: refused from the header
            head = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content}\r\nContent-Length: {len(body)}\r\n\r\n"
            return raw(port, head.encode(), [body[:65536]])[0], None, None, None
        head = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content}\r\nTransfer-Encoding: chunked\r\n\r\n"
        pieces = [body[start : start + 65536] for start in range(0, len(body), 65536)]
        chunks = [f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces] + [b"0\r\n\r\n"]
        return raw(port, head.encode(), chunks)[0], None, None, None
    body = drawing_json(rng.choice(good["drawing"])[0])  # slow: one byte every 50 ms
    head = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return raw(port, head.encode(), [bytes([byte]) for byte in body], pause=0.05)[0], None, None, None


def rss_bytes(pid: int) -> int:
    """Resident memory of the server process and its children (the workers), from Linux /proc."""
    family = [pid] + [
        int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and _parent(int(entry.name)) == pid
    ]
    total = 0
    for member in family:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class Soak:
    """The shared state of one soak: who sends what when, and everything that came back."""

    def __init__(self, count: int, seconds: float, time_cap: float, seed: int):
        kinds, weights = zip(*MIX.items(), strict=True)
        self.plan = random.Random(seed).choices(kinds, weights, k=count)
        self.interval, self.time_cap = seconds / count, time_cap
        self.lock, self.next, self.done = threading.Lock(), 0, 0
        self.records: list[tuple[float, str, int, float, str | None, str | None, str | None]] = []
        self.failures: list[str] = []
        self.began = time.monotonic()

    def take(self) -> tuple[int, str] | None:
        with self.lock:
            index = self.next
            if index >= len(self.plan) or time.monotonic() - self.began > self.time_cap:
                return None
            self.next += 1
        time.sleep(max(0.0, self.began + index * self.interval - time.monotonic()))  # pace the run
        return index, self.plan[index]

    def client(self, port: int, good: dict, seed: int) -> None:
        rng = random.Random(seed)
        while (taken := self.take()) is not None:
            start = time.monotonic()
            try:
                status, label, expected, truth = one_request(port, taken[1], rng, good)
            except (OSError, http.client.HTTPException, ValueError) as error:
                status, label, expected, truth = -1, None, None, None
                with self.lock:
                    self.failures.append(f"{taken[1]}: {type(error).__name__}: {error}")
            elapsed = time.monotonic() - start
            with self.lock:
                self.records.append((start - self.began, taken[1], status, elapsed, label, expected, truth))
                self.done += 1


def summary(records: list, failures: list[str], duration: float) -> dict:
    """Outcomes by kind and status, the right answers (the only throughput), wrong answers, sheds, the goals'
    counts, and the latency of right answers per tenth of the run."""
    outcomes: dict[str, Counter] = {kind: Counter() for kind in MIX}
    for record in records:
        outcomes[record[1]][str(record[2])] += 1
    good = [r for r in records if r[1] in ("drawing", "upload")]
    answered = [r for r in good if r[2] == 200]
    right = [r for r in answered if r[4] == r[5]]
    wrong = [r for r in answered if r[4] != r[5]]
    drawings = [r for r in answered if r[1] == "drawing"]
    bad = [r for r in records if r[1] in EXPECTED]
    windows = []
    for tenth in range(10):
        inside = [r[3] * 1000 for r in right if tenth <= 10 * r[0] / max(duration, 1e-9) < tenth + 1]
        windows.append(
            {
                "from_s": round(tenth * duration / 10, 2),
                "right_answers": len(inside),
                "p50_ms": float(np.percentile(inside, 50)) if inside else None,
                "p99_ms": float(np.percentile(inside, 99)) if inside else None,
            }
        )
    shed = sum(1 for r in records if r[2] == 503)
    return {
        "outcomes": {kind: dict(counts) for kind, counts in outcomes.items()},
        "expected_status": EXPECTED,
        "good_requests": len(good),
        "right_answers": len(right),
        "right_answers_per_second": len(right) / max(duration, 1e-9),
        "answered_good": len(answered),
        "shed_503": shed,
        "shed_share": shed / max(len(records), 1),
        "good_shed_503": sum(1 for r in good if r[2] == 503),
        "wrong_answers": len(wrong),
        "first_wrong": [f"{r[1]}: answered {r[4]}, expected {r[5]}" for r in wrong[:5]],
        "drawing_accuracy": sum(r[4] == r[6] for r in drawings) / len(drawings) if drawings else None,
        "server_errors": sum(1 for r in records if r[2] >= 500 and r[2] != 503),
        "bad_requests_not_refused_4xx": sum(1 for r in bad if not 400 <= r[2] < 500),
        "bad_requests_shed_503": sum(1 for r in bad if r[2] == 503),
        "bad_requests_with_unexpected_4xx": sum(1 for r in bad if 400 <= r[2] < 500 and r[2] != EXPECTED[r[1]]),
        "good_requests_refused": sum(1 for r in good if r[2] not in (200, 503)),
        "failed_connections": len(failures),
        "first_failures": failures[:5],
        "latency_over_time": windows,
    }


def capacity(port: int, good: dict, clients: int, seconds: float) -> dict:
    """Right answers a second to drawings sent in a closed loop by `clients` threads for `seconds` (after a
    short warm-up): what the server serves when it is kept busy."""
    work = [Item(drawing_json(data), expected, truth) for data, expected, truth in good["drawing"]]
    url, headers = f"http://127.0.0.1:{port}", {"Content-Type": "application/json"}
    load(url, work, headers, 50, min(clients, 8), 30)
    measured = load(url, work, headers, 10**9, clients, seconds)
    return {key: measured[key] for key in ("requests", "right_answers", "wrong_answers", "shed_503", "errors")} | {
        "right_answers_per_second": measured["throughput_per_second"],
        "seconds": measured["wall_seconds"],
        "clients": clients,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder to serve")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the soak (default 60)")
    parser.add_argument("--load", type=float, default=0.7, help="offered requests a second, as a share of capacity")
    parser.add_argument("--requests", type=int, help="requests to send (default: the offered rate × --seconds)")
    parser.add_argument("--capacity-seconds", type=float, default=5.0, help="capacity measurement (default 5 s)")
    parser.add_argument("--shed-ceiling", type=float, default=0.01, help="most sheds (503) at a held load (0.01)")
    parser.add_argument("--accuracy-floor", type=float, default=0.9, help="least accuracy of the drawings (0.9)")
    parser.add_argument("--clients", type=int, default=32, help="client threads (default 32)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (digitlab serve --workers)")
    parser.add_argument("--serve-args", default="", help="more `digitlab serve` options")
    parser.add_argument("--pictures", type=int, default=200, help="distinct test digits drawn (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix (default 0)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    if args.clients < 1 or args.pictures < 4 or min(args.seconds, args.load, args.capacity_seconds) <= 0:
        parser.error("--clients, --seconds, --load and --capacity-seconds must be positive, --pictures at least 4")

    good = pictures(args.run, args.pictures)
    options = SERVER_OPTIONS + (["--workers", str(args.workers)] if args.workers != 1 else [])
    server, url = start_server(args.run, options + shlex.split(args.serve_args))
    port = int(url.rsplit(":", 1)[1])
    try:
        measured = capacity(port, good, args.clients, args.capacity_seconds)
        rate = args.load * measured["right_answers_per_second"]
        count = args.requests or max(1, round(rate * args.seconds))
        seconds = count / rate if rate > 0 else args.seconds
        report = soak(server.pid, port, good, count, seconds, args)
    finally:
        server.terminate()
        server.wait(30)
    report = {
        "benchmark": "serve_soak",
        "capacity": measured,
        "offered_load": args.load,
        "offered_per_second": count / seconds,
        "measured_offered_per_second": report["requests_sent"] / report["duration_seconds"],
        "requests_asked": count,
        "clients": args.clients,
        "seconds_asked": seconds,
        "mix_percent": MIX,
        "server": f"digitlab serve {' '.join(options + shlex.split(args.serve_args))}",
        "goals": {
            "shed_ceiling": args.shed_ceiling,
            "shed_ceiling_applies": args.load <= HOLD_LOAD,
            "hold_load": HOLD_LOAD,
            "accuracy_floor": args.accuracy_floor,
        },
        **report,
        "pictures": {kind: len(items) for kind, items in good.items()},
        "in_process_accuracy_on_those_pictures": {
            kind: sum(expected == true for _, expected, true in items) / len(items) for kind, items in good.items()
        },
        "load_average_1min_end": os.getloadavg()[0],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return verdict(report, args.out)


def soak(pid: int, port: int, good: dict, count: int, seconds: float, args: argparse.Namespace) -> dict:
    """Send `count` requests of the mix paced over `seconds`; the summary, with the server's memory over time."""
    run = Soak(count, seconds, time_cap=3 * seconds + 60, seed=args.seed)
    reference = min(REFERENCE_REQUEST, count // 4)
    memory: dict[str, int | None] = {"start": rss_bytes(pid), "at_reference": None, "end": None}
    memory_over_time: list[tuple[float, int, int]] = []
    clients = [
        threading.Thread(target=run.client, args=(port, good, args.seed * 1000 + n)) for n in range(args.clients)
    ]
    for client in clients:
        client.start()
    while any(client.is_alive() for client in clients):
        time.sleep(0.5)
        memory_over_time.append((round(time.monotonic() - run.began, 1), run.done, rss_bytes(pid)))
        if memory["at_reference"] is None and run.done >= reference:
            memory["at_reference"] = memory_over_time[-1][2]
    duration = time.monotonic() - run.began
    memory["end"] = rss_bytes(pid)
    growth = (memory["end"] - memory["at_reference"]) / memory["at_reference"] if memory["at_reference"] else None
    return {
        "requests_sent": len(run.records),
        "duration_seconds": duration,
        **summary(run.records, run.failures, duration),
        "memory_bytes": memory,
        "memory_reference_request": reference,
        "memory_growth_from_reference": growth,
        "memory_over_time": memory_over_time[:: max(1, len(memory_over_time) // 60)],
    }


def verdict(report: dict, out: Path) -> int:
    """Print the outcome and the goals; 0 when every goal is met."""
    capacity, goals = report["capacity"], report["goals"]
    accuracy = report["drawing_accuracy"]
    print(
        f"capacity {capacity['right_answers_per_second']:.0f} right answers/s; offered {report['offered_load']:.0%} of "
        f"it ({report['measured_offered_per_second']:.0f} requests/s): {report['requests_sent']:,} requests from "
        f"{report['clients']} clients in {report['duration_seconds']:.1f} s: {report['right_answers']:,} right answers "
        f"({report['right_answers_per_second']:.0f}/s), {report['shed_503']:,} shed (503, {report['shed_share']:.1%}"
        f"{'' if goals['shed_ceiling_applies'] else ', no ceiling above ' + format(goals['hold_load'], '.0%')}), "
        f"{report['wrong_answers']} wrong, {report['server_errors']} server errors, "
        f"{report['bad_requests_not_refused_4xx']} bad requests not refused with a 4xx "
        f"({report['bad_requests_shed_503']} shed), {report['failed_connections']} failed connections, "
        f"drawing accuracy {accuracy if accuracy is None else format(accuracy, '.1%')}"
    )
    growth = report["memory_growth_from_reference"]
    shown = "not measured" if growth is None else f"{growth:.1%}"
    print(f"memory: {report['memory_bytes']}, growth from request {report['memory_reference_request']}: {shown}")
    for line in report["first_wrong"] + report["first_failures"]:
        print(f"problem: {line}", file=sys.stderr)
    print(f"wrote {out}")
    checks = {
        "a capacity above zero": capacity["right_answers_per_second"] > 0,
        "no wrong answer": report["wrong_answers"] == 0,
        "no server error": report["server_errors"] == 0,
        "every bad request its own 4xx": report["bad_requests_not_refused_4xx"] == 0
        and report["bad_requests_with_unexpected_4xx"] == 0,
        "no good request refused": report["good_requests_refused"] == 0,
        "no failed connection": report["failed_connections"] == 0,
        "shed share within the ceiling": not goals["shed_ceiling_applies"]
        or report["shed_share"] <= goals["shed_ceiling"],
        "accuracy over the floor": accuracy is not None and accuracy >= goals["accuracy_floor"],
        "memory growth at most 10%": growth is not None and growth <= 0.10,
        "every request sent": report["requests_sent"] == report["requests_asked"],
    }
    missed = [name for name, met in checks.items() if not met]
    if missed:
        print(f"serve_soak: goals missed: {', '.join(missed)}", file=sys.stderr)
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
