"""Folder speed of `digitlab predict` on phone photos: photos per second, decoding and preprocessing included.

Renders --count photos (default 200) at phone resolution (12 megapixels, 4000×3000 JPEG, quality 90,
RGB): test digits written on plain, ruled or squared paper with grain and a light gradient
(digitlab.inference.realworld.phone_page). Then times `run.predict(folder)` as `digitlab predict RUN DIR`
runs it (thread pool, batched forward pass), after a warm-up on 8 photos, best of --repeats, and
checks the labels. The model load is not timed. Side by side, in the same run, it times decoding
alone (`load_image` over the folder in the same number of threads): the ceiling that JPEG's entropy
decoding puts on any reader of these files on this machine.

    python benchmarks/photos.py [RUN] [--count 200] [--workers N] [--repeats 2]

writes benchmarks/results/photos.json (atomically).
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
from digitlab.files import atomic_write
from digitlab.images.preprocess import load_image
from digitlab.inference.predict import WORKERS
from digitlab.inference.realworld import PHONE_SIZE, phone_page
from digitlab.runs.shipped import resolve_run

RESULTS = Path(__file__).parent / "results"


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
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            results = run.predict(folder, workers=args.workers, errors="collect")
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        decode_walls = []
        with ThreadPoolExecutor(args.workers) as pool:
            for _ in range(args.repeats):
                wall = time.perf_counter()
                list(pool.map(load_image, sorted(Path(folder).iterdir())))
                decode_walls.append(time.perf_counter() - wall)
    correct = sum(result.ok and int(result.label) == label for result, label in zip(results, labels, strict=False))
    best = min(walls)
    report = {
        "benchmark": "photos",
        "photos": args.count,
        "size": list(PHONE_SIZE),
        "megapixels": PHONE_SIZE[0] * PHONE_SIZE[1] / 1e6,
        "mean_file_bytes": round(float(np.mean(sizes))),
        "workers": args.workers,
        "wall_seconds": walls,
        "photos_per_second": args.count / best,
        "ms_per_photo": 1000 * best / args.count,
        "cpu_ms_per_photo": 1000 * min(cpus) / args.count,
        "decode_only_photos_per_second": args.count / min(decode_walls),
        "correct": correct,
        "errors": sum(not result.ok for result in results),
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
        f"{report['photos_per_second']:.1f} photos/s ({report['ms_per_photo']:.1f} ms wall, "
        f"{report['cpu_ms_per_photo']:.1f} ms CPU a photo) on {args.count} 12-MP JPEGs with {args.workers} "
        f"threads; {correct}/{args.count} correct; decoding alone: "
        f"{report['decode_only_photos_per_second']:.1f} photos/s; load average {load_before:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
