"""Fetching under a crowd and under faults: 8 processes (and 8 threads) on a fresh cache served by a
slow local mirror all succeed, each file is downloaded once and nobody reads a half-written file; a
mirror that dies mid-transfer leaves nothing behind and the next try starts over and verifies; a
fetch killed mid-download never blocks the next one."""

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

import digitlab
from conftest import idx_bytes, tiny_dataset_arrays
from digitlab.data.datasets import DatasetInfo, register_dataset
from digitlab.data.fetch import fetch, sha256_of
from digitlab.errors import DataError

# A mirror in its own process (standard library only, so it starts at once): it serves the .gz
# files of a folder in 64 kB chunks with a pause after each, prints "GET <name>" for every request,
# and with "die" as its last argument exits (os._exit) halfway through the first file it sends.
MIRROR = r"""
import http.server, os, sys, time
folder, pause, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]

class Mirror(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.lstrip("/")
        sys.stdout.write(f"GET {name}\n")  # one write, so threads' lines never interleave
        sys.stdout.flush()
        path = os.path.join(folder, name)
        if "/" in name or not os.path.isfile(path):
            self.send_error(404)
            return
        body = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        end = len(body) // 2 if mode == "die" else len(body)
        for start in range(0, end, 65536):
            self.wfile.write(body[start : min(start + 65536, end)])
            self.wfile.flush()
            time.sleep(pause)
        if mode == "die":
            os._exit(1)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
print(server.server_port, flush=True)
server.serve_forever()
"""

# A fetching process: says "ready", waits for "go" on stdin (so all start at once), fetches, then
# reads every file back and prints its SHA-256. It loads digitlab.data.fetch (and the errors and files
# modules it imports) without the package's __init__, which imports torch: eight torch imports
# would take most of the test's time on two cores, and fetch needs none of it. The dataset's
# registry entry is given as a namespace with DatasetInfo's fields.
WORKER = r"""
import hashlib, json, sys, types
package = types.ModuleType("digitlab")
package.__path__ = [PACKAGE_FOLDER]
sys.modules["digitlab"] = package
from digitlab.data.fetch import fetch
info = types.SimpleNamespace(npm_package=None, debian_dir=None, **json.loads(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
paths = fetch(info, sys.argv[2], sources=("cache", "mirrors"))
print(json.dumps({name: hashlib.sha256(open(path, "rb").read()).hexdigest() for name, path in paths.items()}))
""".replace("PACKAGE_FOLDER", repr(str(Path(digitlab.__file__).parent)))


class Mirror:
    """A mirror process on 127.0.0.1 and the requests it received."""

    def __init__(self, folder: Path, pause: float, mode: str = "serve"):
        self.process = subprocess.Popen(
            [sys.executable, "-c", MIRROR, str(folder), str(pause), mode], stdout=subprocess.PIPE, text=True
        )
        self.url = f"http://127.0.0.1:{self.process.stdout.readline().strip()}/"
        self.requests: Counter = Counter()

    def wait_for_request(self) -> str:
        line = self.process.stdout.readline().split()
        assert line and line[0] == "GET", line
        self.requests[line[1]] += 1
        return line[1]

    def stop(self) -> Counter:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        rest, _ = self.process.communicate(timeout=10)
        self.requests.update(line.split()[1] for line in rest.splitlines() if line.startswith("GET "))
        return self.requests


@pytest.fixture
def dataset(tmp_path):
    """Generated IDX files (3,000 training images: 2.4 MB), gzipped into a folder a mirror serves."""
    served = tmp_path / "served"
    served.mkdir()
    checksums = {}
    for name, array in tiny_dataset_arrays(3000).items():
        raw = idx_bytes(array)
        checksums[name] = hashlib.sha256(raw).hexdigest()
        (served / f"{name}.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    return {"name": "crowd-test", "classes": list("0123456789"), "sha256": checksums}, served


def test_eight_processes_on_a_fresh_cache_all_succeed_and_download_each_file_once(dataset, tmp_path):
    fields, served = dataset
    mirror = Mirror(served, pause=0.01)
    fields = {**fields, "mirrors": [mirror.url]}
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(fields), str(cache)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(8)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready", worker.communicate()
        for worker in workers:  # all at once
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [worker.communicate(timeout=120) for worker in workers]
    finally:
        requests = mirror.stop()
    for worker, (out, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err
        assert json.loads(out) == fields["sha256"]  # what each process read back was whole and verified
    assert requests == {f"{name}.gz": 1 for name in fields["sha256"]}  # one download per file, not one per process
    assert sorted(path.name for path in (cache / "crowd-test").iterdir()) == sorted(fields["sha256"])


def test_eight_threads_share_one_download(dataset, tmp_path):
    fields, served = dataset
    mirror = Mirror(served, pause=0.002)
    info = DatasetInfo(**{**fields, "name": "crowd-threads", "mirrors": (mirror.url,)})
    results, errors = [], []

    def fetch_and_read() -> None:
        try:
            paths = fetch(info, tmp_path / "cache", sources=("cache", "mirrors"))
            results.append({name: sha256_of(path) for name, path in paths.items()})
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=fetch_and_read) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        requests = mirror.stop()
    assert not errors and results == [fields["sha256"]] * 8
    assert requests == {f"{name}.gz": 1 for name in fields["sha256"]}


def test_a_mirror_that_dies_mid_transfer_leaves_nothing_and_the_next_try_verifies(dataset, tmp_path):
    fields, served = dataset
    dying = Mirror(served, pause=0.001, mode="die")
    info = register_dataset(DatasetInfo(**{**fields, "name": "dying-test", "mirrors": (dying.url,)}))
    folder = tmp_path / "cache" / info.name
    with pytest.raises(
        DataError, match=r"could not fetch dying-test: train-images-idx3-ubyte: http://.*: the connection closed after "
    ):
        fetch(info, tmp_path / "cache", sources=("cache", "mirrors"))
    assert dying.stop()["train-images-idx3-ubyte.gz"] == 1
    assert list(folder.iterdir()) == []  # no half-written file, no temp folder
    healthy = Mirror(served, pause=0.0)
    try:
        paths = fetch(info, tmp_path / "cache", sources=("cache", "mirrors"), mirrors=[healthy.url])
    finally:
        healthy.stop()
    assert {name: sha256_of(path) for name, path in paths.items()} == fields["sha256"]


def test_a_fetch_killed_mid_download_never_blocks_the_next(dataset, tmp_path):
    fields, served = dataset
    stalling = Mirror(served, pause=5.0)  # 64 kB every 5 s: the victim is mid-download when killed
    fields = {**fields, "name": "killed-test", "mirrors": [stalling.url]}
    cache = tmp_path / "cache"
    victim = subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(fields), str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout.readline().strip() == "ready"
        victim.stdin.write("go\n")
        victim.stdin.flush()
        stalling.wait_for_request()
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    finally:
        stalling.stop()
    assert (cache / ".killed-test.lock").exists() and list((cache / "killed-test").glob(".fetch-*"))  # left behind
    healthy = Mirror(served, pause=0.0)
    info = DatasetInfo(**{**fields, "mirrors": (healthy.url,)})
    results: list = []
    # in a thread, so a lock that outlived its holder fails the test instead of hanging it
    after = threading.Thread(target=lambda: results.append(fetch(info, cache, sources=("cache", "mirrors"))))
    try:
        after.start()
        after.join(timeout=30)
    finally:
        healthy.stop()
    assert results, "the next fetch waited on the dead process's lock"
    assert {name: sha256_of(path) for name, path in results[0].items()} == fields["sha256"]
    assert sorted(path.name for path in (cache / "killed-test").iterdir()) == sorted(fields["sha256"])
