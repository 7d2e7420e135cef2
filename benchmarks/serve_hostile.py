"""The attacks of issue 29 against `digitlab serve` on 127.0.0.1, as a bounded, repeatable suite.

Starts `digitlab serve RUN --port 0` (default: the shipped model, as `digitlab serve` with no run) with its
default limits, then runs each attack in turn from 127.0.0.2 (one hostile client; Linux routes all of
127.0.0.0/8 to this machine) while two well-behaved clients watch from 127.0.0.1: one sends a drawing a
second (POST /api/predict, 10 s timeout) and must keep getting the right answer, one asks /healthz every 50 ms.

    pixels-KIND      one 100-megapixel picture of KIND (benchmarks/hostile_pictures.py: every PNG, JPEG, TIFF,
                     WebP, HEIC and GIF mode) uploaded alone, then 4 at once, twice: 200 with "7", or 413 when
                     decoding it would hold more than --max-decode-mb
    idle-bodies      48 connections that each declare a 1,000-byte body and send 1 byte, renewed as they close
    big-json         a 32 MB JSON body with 3 million keys, from 2 connections in a loop
    malformed        a lone surrogate in "name", JSON nested 100,000 deep, a 5,000-digit number, target=²
    huge-header      a 120 MB header streamed from 2 connections
    dribbled-headers 48 connections sending one header line every 3 s
    connection-flood 600 connections opened at once, sending nothing

Recorded per attack: the attack's status codes, the server's peak memory (Linux: VmHWM after clear_refs, the
server process) above its idle memory just before the attack and above its idle memory before the first
attack (after a few warm-up drawings), /healthz p50/p99 during it, and the share of the drawing client's
requests answered right. Goals (issue 29): no server error (5xx other than 503), both peaks ≤ +300 MB,
/healthz p99 ≤ 100 ms, ≥ 95% of the drawings answered right; for pixels, every 200 answered "7".

    python benchmarks/serve_hostile.py [RUN] [--only big-json pixels-png-P ...] [--seconds 12]

writes benchmarks/results/serve_hostile.json; exits 1 if any goal is missed. The clients share the machine's
cores with the server, as an attacker on the same host would.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hostile_pictures import KINDS, picture
from serve_load import digit_png

RESULTS = Path(__file__).parent / "results" / "serve_hostile.json"
ATTACKER, FRIEND = "127.0.0.2", "127.0.0.1"
MIN_WATCH_S = 5.0  # the watchers see every attack for at least this long (an attack refused at once is short)
GOALS = {"peak_mb": 300, "health_p99_ms": 100, "served_share": 0.95}
BOUNDARY = "digitlab-hostile"


def connect(port: int, source: str = ATTACKER, timeout: float = 30) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def answer(connection: socket.socket) -> tuple[int, bytes]:
    """Read one answer (until the declared length, or the close); -1 when the server closed without one."""
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if _ and len(body) >= _length(head):
                break
    except (ConnectionResetError, TimeoutError, OSError):
        pass
    try:
        return int(data.split(None, 2)[1]), data.partition(b"\r\n\r\n")[2]
    except (IndexError, ValueError):
        return -1, b""


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def post(
    port: int, path: str, body: bytes, kind: str, source: str = ATTACKER, timeout: float = 60
) -> tuple[int, bytes]:
    """One POST on its own connection; (status, body), -1 if the connection failed."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    try:
        with connect(port, source, timeout) as connection:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.sendall(head.encode() + body)
            return answer(connection)
    except OSError:
        return -1, b""


def upload(data: bytes, name: str) -> tuple[bytes, str]:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


@dataclass
class Watch:
    """The two well-behaved clients and what they saw during one attack."""

    port: int
    drawing: bytes
    label: str
    stop: threading.Event = field(default_factory=threading.Event)
    health_ms: list[float] = field(default_factory=list)
    health_failures: int = 0
    drawings: Counter = field(default_factory=Counter)
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Watch:
        self.threads = [threading.Thread(target=self._health), threading.Thread(target=self._draw)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _health(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(FRIEND, 0))
        while not self.stop.wait(0.05):
            began = time.perf_counter()
            try:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise http.client.HTTPException(f"HTTP {response.status}")
                self.health_ms.append((time.perf_counter() - began) * 1000)
            except (OSError, http.client.HTTPException):
                self.health_failures += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(FRIEND, 0))
        connection.close()

    def _draw(self) -> None:
        body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(self.drawing).decode()}).encode()
        while True:
            began = time.monotonic()
            status, answered = post(self.port, "/api/predict", body, "application/json", FRIEND, timeout=10)
            right = status == 200 and json.loads(answered).get("label") == self.label
            self.drawings["right" if right else f"HTTP {status}"] += 1
            if self.stop.wait(max(0.0, 1.0 - (time.monotonic() - began))):
                return

    def report(self) -> dict:
        sent = sum(self.drawings.values())
        health = np.array(self.health_ms or [float("nan")])
        return {
            "health_p50_ms": float(np.percentile(health, 50)),
            "health_p99_ms": float(np.percentile(health, 99)),
            "health_checks": len(self.health_ms),
            "health_failures": self.health_failures,
            "drawings": dict(self.drawings),
            "served_share": self.drawings["right"] / sent if sent else None,
        }


def _status_of(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_reset(pid: int) -> int:
    """Reset the server's peak memory (Linux clear_refs) and return its memory now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_of(pid, "VmRSS")


def in_parallel(count: int, work: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def pixels(kind: str, megapixels: float) -> Callable:
    def attack(port: int, seconds: float, statuses: Counter, pid: int) -> dict:
        body, content = upload(picture(kind, megapixels), f"{kind}{KINDS[kind][0]}")
        labels: Counter = Counter()

        def one(_: int) -> None:
            status, answered = post(port, "/api/predict", body, content, timeout=120)
            statuses[status] += 1
            if status == 200:
                labels[json.loads(answered)["label"]] += 1

        idle = peak_reset(pid)
        one(0)
        alone = (_status_of(pid, "VmHWM") - idle) / 1e6
        for _ in range(2):
            in_parallel(4, one)
        return {
            "bytes": len(body),
            "peak_alone_mb": alone,
            "labels": dict(labels),
            "wrong_answers": labels.total() - labels["7"],
        }

    return attack


def idle_bodies(port: int, seconds: float, statuses: Counter, pid: int) -> dict:
    head = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    deadline, opened = time.monotonic() + seconds, Counter()

    def holder(_: int) -> None:
        while time.monotonic() < deadline:
            try:
                with connect(port, timeout=seconds + 15) as connection:
                    connection.sendall(head)
                    opened["connections"] += 1
                    statuses[answer(connection)[0]] += 1
            except OSError:
                statuses[-1] += 1

    in_parallel(48, holder)
    return dict(opened)


def big_json(port: int, seconds: float, statuses: Counter, pid: int) -> dict:
    keys = 3_000_000
    body = b"{" + b",".join(b'"%x":1' % i for i in range(keys)) + b"}"  # ~32 MB: under the JSON body limit
    deadline = time.monotonic() + seconds

    def sender(_: int) -> None:
        while time.monotonic() < deadline:
            statuses[post(port, "/api/predict", body, "application/json")[0]] += 1

    in_parallel(2, sender)
    return {"body_bytes": len(body), "keys": keys}


def malformed(port: int, seconds: float, statuses: Counter, pid: int) -> dict:
    bodies = {
        "lone surrogate": (b'{"image": "bm90IGFuIGltYWdl", "name": "\\ud800"}', "/api/predict"),
        "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "/api/predict"),
        "5,000-digit number": (b'{"image": "x", "n": 1' + b"0" * 5000 + b"}", "/api/predict"),
        "target=²": (b'{"image": "x"}', "/api/explain?target=%C2%B2"),
    }
    seen: dict[str, Counter] = {name: Counter() for name in bodies}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, (body, path) in bodies.items():
            status = post(port, path, body, "application/json")[0]
            statuses[status] += 1
            seen[name][status] += 1
    return {name: dict(counts) for name, counts in seen.items()}


def huge_header(port: int, seconds: float, statuses: Counter, pid: int) -> dict:
    line = b"X-Filler: " + b"a" * 65_000 + b"\r\n"
    deadline = time.monotonic() + seconds

    def sender(_: int) -> None:
        while time.monotonic() < deadline:
            try:
                with connect(port) as connection:
                    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        for _ in range(120_000_000 // len(line)):  # 120 MB, unless the server stops it first
                            connection.sendall(line)
                    statuses[answer(connection)[0]] += 1
            except OSError:
                statuses[-1] += 1

    in_parallel(2, sender)
    return {}


def dribbled_headers(port: int, seconds: float, statuses: Counter, pid: int) -> dict:
    deadline = time.monotonic() + seconds

    def dribbler(number: int) -> None:
        while time.monotonic() < deadline:
            try:
                with connect(port, timeout=seconds + 15) as connection:
                    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    lines = 0
                    while not select.select([connection], [], [], 3)[0]:  # one header line every 3 s
                        lines += 1
                        connection.sendall(b"X-Line-%d: x\r\n" % lines)
                    statuses[answer(connection)[0]] += 1  # the server answers (408) or closes (-1)
            except OSError:
                statuses[-1] += 1

    in_parallel(48, dribbler)
    return {}


def connection_flood(port: int, seconds: float, statuses: Counter, pid: int) -> dict:
    sockets, refused = [], 0
    for _ in range(600):
        try:
            sockets.append(connect(port, timeout=5))
        except OSError:
            refused += 1
    time.sleep(min(seconds, 5))  # hold them while the watchers go on
    for connection in sockets:
        connection.settimeout(0.2)
        try:
            closed = connection.recv(1) == b""
        except (TimeoutError, BlockingIOError):
            closed = False
        except OSError:
            closed = True
        statuses["closed by the server" if closed else "still open"] += 1
        connection.close()
    return {"refused_at_connect": refused}


def attacks(megapixels: float) -> dict[str, Callable]:
    found: dict[str, Callable] = {f"pixels-{kind}": pixels(kind, megapixels) for kind in KINDS}
    found.update(
        {
            "idle-bodies": idle_bodies,
            "big-json": big_json,
            "malformed": malformed,
            "huge-header": huge_header,
            "dribbled-headers": dribbled_headers,
            "connection-flood": connection_flood,
        }
    )
    return found


def run_attack(
    name: str, attack: Callable, port: int, pid: int, seconds: float, drawing: tuple[bytes, str], start_mb: float
) -> dict:
    statuses: Counter = Counter()
    idle = peak_reset(pid)
    began = time.monotonic()
    with Watch(port, *drawing) as watch:
        details = attack(port, seconds, statuses, pid)
        watch.stop.wait(max(0.0, began + MIN_WATCH_S - time.monotonic()))  # enough checks for a p99, however short
    peak = _status_of(pid, "VmHWM")
    result = {
        "attack": name,
        "seconds": round(time.monotonic() - began, 2),
        "statuses": {str(status): count for status, count in sorted(statuses.items(), key=str)},
        "idle_mb": idle / 1e6,
        "peak_mb": (peak - idle) / 1e6,  # above the idle memory just before this attack
        "peak_over_start_mb": peak / 1e6 - start_mb,  # above the server's idle memory before the first attack
        **watch.report(),
        **details,
    }
    server_errors = sum(
        count for status, count in statuses.items() if isinstance(status, int) and status >= 500 and status != 503
    )
    server_errors += sum(
        count for status, count in watch.drawings.items() if status.startswith("HTTP 5") and status != "HTTP 503"
    )
    result["server_errors"] = server_errors
    result["goals_met"] = {
        "no_server_error": server_errors == 0,
        "peak_memory": max(result["peak_mb"], result["peak_over_start_mb"]) <= GOALS["peak_mb"],
        "health_p99": result["health_p99_ms"] <= GOALS["health_p99_ms"] and watch.health_failures == 0,
        "served": (result["served_share"] or 0) >= GOALS["served_share"],
        "right_answers": details.get("wrong_answers", 0) == 0,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", default=None, help="run folder to serve (default: the shipped model)")
    parser.add_argument("--only", nargs="*", help="attack names (or prefixes, e.g. pixels-png) to run; default all")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each timed attack (default 12)")
    parser.add_argument("--megapixels", type=float, default=100.0, help="size of the pictures (default 100)")
    parser.add_argument("--serve-args", default="", help="more `digitlab serve` options")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    chosen = {
        name: attack
        for name, attack in attacks(args.megapixels).items()
        if not args.only or any(name.startswith(prefix) for prefix in args.only)
    }
    if not chosen:
        parser.error(f"no attack matches {args.only}")
    for name in chosen:  # make the pictures before the server starts, not during an attack
        if name.startswith("pixels-"):
            picture(name.removeprefix("pixels-"), args.megapixels)
    options = shlex.split(args.serve_args)
    server, port = start(args.run, options, Path(tempfile.gettempdir()) / f"serve_hostile-{os.getpid()}.log")
    drawing = digit_png()
    results = []
    try:
        warm = Watch(port, *drawing)  # the first answers load what every later one uses: not an attack's cost
        with warm:
            warm.stop.wait(3)
        start_mb = _status_of(server.pid, "VmRSS") / 1e6
        for name, attack in chosen.items():
            result = run_attack(name, attack, port, server.pid, args.seconds, drawing, start_mb)
            results.append(result)
            missed = [goal for goal, met in result["goals_met"].items() if not met]
            print(
                f"{name:28s} {json.dumps(result['statuses'])[:60]:60s} peak +{result['peak_mb']:.0f} MB "
                f"(+{result['peak_over_start_mb']:.0f} over the start), "
                f"/healthz p99 {result['health_p99_ms']:.0f} ms, drawings {result['served_share'] or 0:.0%}"
                + (f"  MISSED: {', '.join(missed)}" if missed else ""),
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(30)
    report = {
        "benchmark": "serve_hostile",
        "server": f"digitlab serve {args.run or '(shipped model)'} {' '.join(options)}".strip(),
        "megapixels": args.megapixels,
        "seconds_per_timed_attack": args.seconds,
        "goals": GOALS,
        "idle_at_start_mb": start_mb,
        "attacks": results,
        "all_goals_met": all(all(result["goals_met"].values()) for result in results),
        "load_average_1min_end": os.getloadavg()[0],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".json.part")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    temporary.replace(args.out)
    print(f"wrote {args.out}: {'every goal met' if report['all_goals_met'] else 'goals missed'}")
    return 0 if report["all_goals_met"] else 1


def start(run: str | None, options: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    """`digitlab serve [RUN] --port 0 OPTIONS` with its log in `log` (a pipe nobody reads would fill and stall it);
    the process and its port once /healthz answers."""
    with log.open("w") as errors:
        server = subprocess.Popen(
            [sys.executable, "-m", "digitlab", "serve", *([run] if run else []), "--port", "0", *options],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    line = server.stdout.readline() if server.stdout else ""
    if "http://" not in line:
        server.kill()
        sys.exit(f"serve_hostile: the server did not start: {line}{log.read_text()}")
    port = int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=30)) as check:
        check.request("GET", "/healthz")
        check.getresponse().read()
    return server, port


if __name__ == "__main__":
    sys.exit(main())
