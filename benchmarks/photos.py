"""Folder speed of `digitlab predict` on phone photos: photos per second, decoding and preprocessing included.

Renders --count photos (default 200) at phone resolution (12 megapixels, 4000×3000 JPEG, quality 90,
RGB): test digits written on plain, ruled or squared paper with grain and a light gradient
(digitlab.inference.realworld.phone_page). Then times `run.predict(folder)` as `digitlab predict RUN DIR`
runs it (thread pool, batched forward pass), after a warm-up on 8 photos, best of --repeats, and
checks the labels: only right answers count as throughput (right answers per second of the pass), and
wrong answers, refusals (not a digit) and errors are figures of their own. The model load is not timed. Side by side, in the same run, it times decoding
alone (`load_image` over the folder in the same number of threads): the ceiling that JPEG's entropy
decoding puts on any reader of these files on this machine.

    python benchmarks/photos.py [RUN] [--count 200] [--workers N] [--repeats 2]

writes benchmarks/results/photos.json (atomically). Goal (the phone issue's): 100 right answers a second,
and every photo read right; exit 1 if either is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import digitlab
from common import tally
from digitlab.files import atomic_write
from digitlab.images.preprocess import load_image
from digitlab.inference.predict import WORKERS
from digitlab.inference.realworld import PHONE_SIZE, phone_page
from digitlab.runs.shipped import resolve_run

RESULTS = Path(__file__).parent / "results"
GOAL = 100  # right answers a second


def write_photos(folder: Path, count: int, seed: int = 0) -> list[int]:
    """`count` phone photos of test digits as folder/photo-NNNN.jpg; returns their labels in name order."""
    test = digitlab.load_dataset("mnist").test
    rng = np.random.default_rng(seed)
    labels = []
    for number, index in enumerate(rng.choice(len(test.labels), count, replace=False)):
        picture, _ = phone_page(test.images[index, 0].numpy(), rng, paper=("plain", "ruled", "squared")[number % 3])
        picture.save(folder / f"photo-{number:04d}.jpg", format="JPEG", quality=90)
        labels.append(int(test.labels[index]))
    return labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", default=None, help="run folder or model file (default: the shipped model)")
    parser.add_argument("--count", type=int, default=200, help="photos to render and read (default 200)")
    parser.add_argument("--workers", type=int, default=WORKERS, help=f"decoding threads (default {WORKERS})")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the folder; the best counts")
    args = parser.parse_args()
    run = resolve_run(args.run)
    with tempfile.TemporaryDirectory(prefix="digitlab-photos-") as folder:
        started = time.perf_counter()
        labels = write_photos(Path(folder), args.count)
        render_s = time.perf_counter() - started
        sizes = [path.stat().st_size for path in Path(folder).iterdir()]
        run.predict(sorted(Path(folder).iterdir())[:8], workers=args.workers)  # warm-up: imports, threads
        load_before = os.getloadavg()[0]
        walls, cpus, passes = [], [], []
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            results = run.predict(folder, workers=args.workers, errors="collect")
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            passes.append(tally(results, [str(label) for label in labels]))
        decode_walls = []
        with ThreadPoolExecutor(args.workers) as pool:
            for _ in range(args.repeats):
                wall = time.perf_counter()
                list(pool.map(load_image, sorted(Path(folder).iterdir())))
                decode_walls.append(time.perf_counter() - wall)
    best = min(range(args.repeats), key=walls.__getitem__)
    counts = passes[best]
    right_per_second = counts["right"] / walls[best]
    passed = {"speed": right_per_second >= GOAL, "all_right": counts["right"] == args.count}
    report = {
        "benchmark": "photos",
        "photos": args.count,
        "size": list(PHONE_SIZE),
        "megapixels": PHONE_SIZE[0] * PHONE_SIZE[1] / 1e6,
        "mean_file_bytes": round(float(np.mean(sizes))),
        "workers": args.workers,
        "wall_seconds": walls,
        "right_per_second": right_per_second,
        "ms_per_photo": 1000 * walls[best] / args.count,
        "cpu_ms_per_photo": 1000 * min(cpus) / args.count,
        "decode_only_photos_per_second": args.count / min(decode_walls),
        **counts,
        "passes": passes,
        "goal_right_per_second": GOAL,
        "passed": passed,
        "render_seconds": render_s,
        "model": {"run": Path(args.run).name if args.run else "shipped", "model": run.config.model},
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": "python benchmarks/photos.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write(RESULTS / "photos.json", lambda temp: Path(temp).write_text(json.dumps(report, indent=2) + "\n"))
    print(
        f"{right_per_second:.1f} right answers/s ({report['ms_per_photo']:.1f} ms wall, "
        f"{report['cpu_ms_per_photo']:.1f} ms CPU a photo) on {args.count} 12-MP JPEGs with {args.workers} "
        f"threads; {counts['right']} right, {counts['wrong']} wrong, {counts['refused']} refused, "
        f"{counts['errors']} errors; decoding alone: {report['decode_only_photos_per_second']:.1f} photos/s; "
        f"load average {load_before:.1f}; goals: {passed}"
    )
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
