"""Batch reading on Ray against single-machine `predict`, side by side on the same files.

Renders the real-world suite (digitlab.inference.realworld: photos, scans, pens, canvas drawings of MNIST test
digits) into a folder, then, in rounds, reads it three ways with the shipped model:

- single machine: `Run.predict` over the files in a fresh process (its threads decode and preprocess);
- Ray, 1 worker and 2 workers: `read_with_ray` on a local cluster of this machine's cores (a head started with
  `ray start`, benchmarks/raynodes.py), each job starting its actors and loading the model in each.

Images per second are files over the job's wall time (actor start included); `steady` leaves out the time to
the first rows (starting the actors and loading the model, paid once per job). Peak memory: the reading
process's maximum resident size (single machine), each Ray actor's sampled every 0.1 s (workers). From the
steady cost per image (cores × seconds / images) follow the core-hours a billion images take.

Goals (issue 32): Ray with 2 workers ≥ 0.8× the single-machine throughput; per-worker throughput flat from 1
to 2 workers (2 workers' per-worker rate ≥ 0.9× 1 worker's).

    python benchmarks/batch_ray.py [--count 300] [--rounds 2]

Writes benchmarks/results/batch_ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import write_result
from digitlab.data.datasets import load_dataset
from digitlab.inference.batch import connect
from digitlab.inference.realworld import render_suite
from digitlab.runs.batch import read_with_ray
from raynodes import Cluster, cluster_env

GOALS = {"ray2_vs_single_at_least": 0.8, "per_worker_2_vs_1_at_least": 0.9}
BILLION = 1e9


def render(folder: Path, count: int) -> list[str]:
    test = load_dataset("mnist").splits()["test"]
    paths = []
    for number, sample in enumerate(render_suite(test.images, test.labels, count=count, seed=3)):
        paths.append(folder / f"{number:05d}-{sample.condition}{sample.suffix}")
        paths[-1].write_bytes(sample.data)
    return [str(path) for path in paths]


def single_machine(listing: Path, cores: int) -> dict:
    """Single-machine predict in a fresh process (so its peak memory is its own)."""
    done = subprocess.run(
        [sys.executable, __file__, "--single", str(listing)], capture_output=True, text=True, check=True
    )
    measured = json.loads(done.stdout.splitlines()[-1])
    return measured | {"cores": cores, "images_per_second": measured["files"] / measured["seconds"]}


def _single(listing: Path) -> None:
    from digitlab.runs.shipped import load_shipped

    files = listing.read_text().split("\n")
    run = load_shipped()
    started = time.perf_counter()
    results = run.predict(files, errors="collect")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"files": len(results), "seconds": seconds, "peak_mb": peak}))


class ActorMemory:
    """Samples the resident memory of the reading actors (processes titled after BatchReader) in a thread."""

    def __init__(self):
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.1):
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                command = " ".join(process.info["cmdline"] or ())
                if "BatchReader" in command and process.info["memory_info"] is not None:
                    rss = process.info["memory_info"].rss / 2**20
                    self.peaks[process.pid] = max(self.peaks.get(process.pid, 0.0), rss)


def ray_job(address: str, listing: Path, workers: int, out: Path) -> dict:
    marks: list[tuple[float, int]] = []
    started = time.perf_counter()
    with ActorMemory() as memory:
        summary = read_with_ray(
            listing,
            out,
            address=address,
            workers=workers,
            batch_size=128,
            progress=lambda done, total: marks.append((time.perf_counter(), done)),
        )
    seconds = time.perf_counter() - started
    first_time, first_rows = marks[0]
    steady = (summary.files - first_rows) / (marks[-1][0] - first_time) if len(marks) > 1 else None
    return {
        "workers": workers,
        "cores": workers,
        "files": summary.files,
        "errors": summary.errors,
        "refused": summary.refused,
        "seconds": seconds,
        "first_rows_seconds": first_time - started,
        "images_per_second": summary.files / seconds,
        "steady_images_per_second": steady,
        "peak_mb_per_worker": max(memory.peaks.values()) if memory.peaks else None,
        "actors_seen": len(memory.peaks),
    }


def core_hours_per_billion(images_per_second: float, cores: int) -> float:
    return cores / images_per_second * BILLION / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="suite pictures per condition (default 300)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three readings (default 2)")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        _single(Path(args.single))
        return
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="batch-ray-") as temp:
        folder = Path(temp)
        (folder / "pictures").mkdir()
        files = render(folder / "pictures", args.count)
        listing = folder / "files.txt"
        listing.write_text("\n".join(files))
        cluster = Cluster(folder, cluster_env())
        os.environ.update(cluster.env)  # this process drives the jobs: it needs the cluster's token
        load_before = os.getloadavg()
        try:
            cluster.start_head(cpus=cores, object_store_mb=300)
            connect(cluster.address)  # once: the jobs' times leave out connecting this driver
            rounds = []
            for number in range(args.rounds):
                rounds.append(
                    {
                        "single": single_machine(listing, cores),
                        "ray_1": ray_job(cluster.address, listing, 1, folder / f"r1-{number}.parquet"),
                        "ray_2": ray_job(cluster.address, listing, 2, folder / f"r2-{number}.parquet"),
                    }
                )
                print(json.dumps(rounds[-1]), flush=True)
        finally:
            cluster.stop()
        # written before the folder goes: removing it can fail while Ray's last processes still write their logs
        write_result("batch_ray", summarize(rounds, len(files), cores, load_before, os.getloadavg()))


def summarize(rounds: list[dict], files: int, cores: int, load_before, load_after) -> dict:
    def median(kind: str, key: str) -> float:
        return statistics.median(round_[kind][key] for round_ in rounds)

    single = median("single", "images_per_second")
    ray1, ray2 = median("ray_1", "images_per_second"), median("ray_2", "images_per_second")
    steady1, steady2 = median("ray_1", "steady_images_per_second"), median("ray_2", "steady_images_per_second")
    ratios = {
        "ray2_vs_single": ray2 / single,
        "ray2_vs_single_steady": steady2 / single,
        "per_worker_2_vs_1": (ray2 / 2) / ray1,
        "per_worker_2_vs_1_steady": (steady2 / 2) / steady1,
    }
    return {
        "files": files,
        "cores": cores,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "rounds": rounds,
        "images_per_second": {"single": single, "ray_1": ray1, "ray_2": ray2},
        "steady_images_per_second": {"ray_1": steady1, "ray_2": steady2},
        "peak_mb": {
            "single": median("single", "peak_mb"),
            "ray_worker": max(
                round_[kind]["peak_mb_per_worker"] or 0 for round_ in rounds for kind in ("ray_1", "ray_2")
            ),
        },
        "ratios": ratios,
        "core_hours_per_billion": {
            "single": core_hours_per_billion(single, cores),
            "ray_2_steady": core_hours_per_billion(steady2, 2),
            "ray_2": core_hours_per_billion(ray2, 2),
        },
        "goals": GOALS,
        "passed": {
            "ray2_vs_single": ratios["ray2_vs_single"] >= GOALS["ray2_vs_single_at_least"],
            "per_worker_flat": ratios["per_worker_2_vs_1"] >= GOALS["per_worker_2_vs_1_at_least"],
        },
    }


if __name__ == "__main__":
    main()
