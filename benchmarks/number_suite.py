"""Reading numbers from photos in the three ways real ones defeat a reader: a large dark area beside the
writing, a line written at a slant, ten small digits with some touching (digitlab.inference.numbersuite).

Each class has `--count` phone-sized JPEG photos (1600×1200) of numbers made of MNIST digits of the
chosen part (test reports; val is where thresholds are chosen), read by `read_number` with a run's
model (default: the shipped one) from the files, as `digitlab predict --number` reads them. Reports
the share read exactly per class and overall, photos per second (wall clock, one process) and the
peak resident memory of the process (which has also loaded MNIST and rendered the photos, one at a
time, to files before reading them), with its resident memory after each stage (`memory_mb`).

Goals (issue 25): >= 95% exact overall and >= 90% in every class; >= 10 photos a second; peak memory
<= 500 MB. Exits 1 when a goal is missed. `--reader` picks how the digits are found (Run.read_number:
the line reader, the default, or the segmenter); `--baseline` then reads the same photos the other way
too, after the first (so the peak memory is the first's), and records its figures and the speed ratio,
measured side by side in the one run, with the machine's load average before each.

    python benchmarks/number_suite.py [RUN] [--count 100] [--part test] [--reader line] [--baseline]

Writes benchmarks/results/number_suite.json (for the test part only; --part val just prints).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import digitlab
from common import write_result
from digitlab.inference.numbersuite import CLASSES, render_numbers
from digitlab.runs.shipped import resolve_run

GOALS = {"exact": 0.95, "each_class": 0.90, "photos_per_second": 10.0, "peak_mb": 500.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="a run folder or model file (default: the shipped model)")
    parser.add_argument("--count", type=int, default=100, help="photos of each class (default 100)")
    parser.add_argument("--part", choices=("val", "test"), default="test", help="digits of this split (default test)")
    parser.add_argument("--reader", choices=("line", "segmenter"), default="line", help="how digits are found")
    parser.add_argument("--baseline", action="store_true", help="also read the photos the other way, side by side")
    args = parser.parse_args()
    memory = {"imports": resident_mb()}
    run = resolve_run(args.run)
    run.line_reader()
    memory["model_and_reader"] = resident_mb()
    with tempfile.TemporaryDirectory(prefix="digitlab-numbers-") as folder:
        photos = written_photos(args.part, args.count, Path(folder))
        memory["photos_written"], memory["peak_before_reading"] = resident_mb(), peak_resident_mb()
        measured = read_suite(run, photos, args.reader)
        memory["after_reading"] = resident_mb()
        peak_mb = peak_resident_mb()
        baseline = read_suite(run, photos, other_reader(args.reader)) if args.baseline else None
    result = {"run": args.run or "shipped", "part": args.part, "count": args.count, **measured, "peak_mb": peak_mb}
    result["memory_mb"] = memory
    result["goals"] = GOALS
    if baseline is not None:
        baseline.pop("misses")
        result["baseline"] = baseline
        result["speedup"] = result["photos_per_second"] / baseline["photos_per_second"]
    classes = result["classes"]
    met = {
        "exact": result["exact"] >= GOALS["exact"],
        "each_class": min(classes.values()) >= GOALS["each_class"],
        "photos_per_second": result["photos_per_second"] >= GOALS["photos_per_second"],
        "peak_mb": peak_mb <= GOALS["peak_mb"],
    }
    result["goals_met"] = met
    if args.part == "test":  # the validation part chooses settings; only the test part is a result
        write_result("number_suite", result)
    if baseline is not None:
        print(f"{baseline['reader']}: {baseline['exact']:.1%} exact, {baseline['photos_per_second']:.2f} photos/s")
    print(
        f"{args.reader}: {result['exact']:.1%} exact ("
        + ", ".join(f"{kind} {value:.0%}" for kind, value in classes.items())
        + f"); {result['photos_per_second']:.2f} photos/s; peak {peak_mb:.0f} MB; goals met: {met}"
    )
    print("resident MB: " + ", ".join(f"{stage} {value:.0f}" for stage, value in memory.items() if value is not None))
    return 0 if all(met.values()) else 1


def resident_mb() -> float | None:
    """The process's resident memory now, in MB (Linux's /proc; None elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:"))


def peak_resident_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def other_reader(reader: str) -> str:
    return next(other for other in ("line", "segmenter") if other != reader)


@dataclass(frozen=True)
class Photo:
    """A photo of the suite written to `path`: its class and the number written in it."""

    kind: str
    truth: str
    path: Path


def written_photos(part: str, count: int, folder: Path) -> list[Photo]:
    """The suite's photos of `part` written to `folder` one by one as JPEG files, so that only the files hold
    them (the reading, not the rendering, is what the peak memory measures); MNIST is let go before reading."""
    data = digitlab.load_dataset("mnist")
    split = data.val if part == "val" else data.test
    photos = []
    for number, photo in enumerate(render_numbers(split, count, seed=0 if part == "test" else 1)):
        path = folder / f"{number:05d}.jpg"
        path.write_bytes(photo.data)
        photos.append(Photo(photo.kind, photo.truth, path))
    return photos


def read_suite(run, photos: list[Photo], reader: str) -> dict:
    """The photos read from their files as `predict --number --number-reader READER` reads them: the share read
    exactly (overall and per class), photos a second, the 1-minute load average before, and the misses."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    readings = run.read_number([photo.path for photo in photos], errors="collect", reader=reader)
    seconds = time.perf_counter() - started
    exact = [reading.ok and reading.number == photo.truth for reading, photo in zip(readings, photos, strict=True)]
    count = len(photos) // len(CLASSES)
    return {
        "reader": reader,
        "exact": sum(exact) / len(exact),
        "classes": {
            kind: sum(hit for hit, photo in zip(exact, photos, strict=True) if photo.kind == kind) / count
            for kind in CLASSES
        },
        "photos_per_second": len(photos) / seconds,
        "load_average_1min_before": load,
        "misses": [
            {"class": photo.kind, "truth": photo.truth, "read": reading.number if reading.ok else reading.error}
            for hit, reading, photo in zip(exact, readings, photos, strict=True)
            if not hit
        ][:50],
    }


if __name__ == "__main__":
    raise SystemExit(main())
