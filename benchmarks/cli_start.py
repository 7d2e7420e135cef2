"""How fast the command line starts: `digitlab --help` and `digitlab predict photo.jpg` from a fresh process.

Renders one phone photo of a test digit (digitlab.inference.realworld.phone_page, 4000×3000 JPEG) and
times, each in a new Python process, `python -m digitlab --help`, `python -m digitlab predict photo.jpg`
(the shipped model) and, for scale, `python -c "import torch"`: --repeats runs of each, interleaved,
median and spread recorded. Bytecode is written once by an untimed warm-up, as an installed package has
it. With --against SRC (the src folder of another checkout, e.g. main's), the same commands run from
that tree in the same rounds, so the speed-up is a ratio measured side by side. Then `python -X
importtime` of each digitlab command says where the start-up goes: import time per top-level package
(digitlab's own rooms apart), the rest of the wall time being the work itself.

    python benchmarks/cli_start.py [--repeats 7] [--against ../main/src]

writes benchmarks/results/cli_start.json (atomically).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import digitlab
from digitlab.files import write_json
from digitlab.inference.realworld import phone_page

RESULTS = Path(__file__).parent / "results"
SOURCE = Path(__file__).resolve().parents[1] / "src"
GOALS_SECONDS = {"help": 0.5, "predict": 1.5}


def commands(photo: Path) -> dict[str, list[str]]:
    return {
        "help": ["-m", "digitlab", "--help"],
        "predict": ["-m", "digitlab", "predict", str(photo)],
        "import torch": ["-c", "import torch"],
    }


def environment(source: Path) -> dict[str, str]:
    """This process's environment with `source` first on the path and bytecode caching on."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def wall_seconds(arguments: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def where_the_time_goes(arguments: list[str], env: dict[str, str]) -> dict[str, float]:
    """Import time (ms, self time summed) per top-level package from `python -X importtime`; digitlab's
    rooms are named digitlab.ROOM."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *arguments], env=env, check=True, capture_output=True, text=True
    )
    by_package: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        self_us, _, name = (part.strip() for part in line[len("import time:") :].split("|"))
        parts = name.split(".")
        package = ".".join(parts[:2]) if parts[0] == "digitlab" and len(parts) > 1 else parts[0]
        by_package[package] += int(self_us) / 1000
    return dict(sorted(by_package.items(), key=lambda item: -item[1]))


def summary(seconds: list[float]) -> dict:
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "runs": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each command (default 7)")
    parser.add_argument("--against", type=Path, help="src folder of another digitlab checkout to time beside this one")
    parser.add_argument("--top", type=int, default=12, help="packages kept in each where-the-time-goes table")
    args = parser.parse_args()
    trees = {"this tree": SOURCE, **({"against": args.against.resolve()} if args.against else {})}
    with tempfile.TemporaryDirectory(prefix="digitlab-cli-start-") as folder:
        test = digitlab.load_dataset("mnist").test
        picture, _ = phone_page(test.images[0, 0].numpy(), np.random.default_rng(0), paper="ruled")
        photo = Path(folder) / "photo.jpg"
        picture.save(photo, format="JPEG", quality=90)
        runs = commands(photo)
        for tree in trees.values():  # untimed: writes bytecode, loads the files into the page cache
            for arguments in runs.values():
                wall_seconds(arguments, environment(tree))
        timings: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in trees}
        load_before = os.getloadavg()
        for _ in range(args.repeats):
            for name, tree in trees.items():
                for command, arguments in runs.items():
                    timings[name][command].append(wall_seconds(arguments, environment(tree)))
        load_after = os.getloadavg()
        imports = {
            command: dict(list(where_the_time_goes(runs[command], environment(SOURCE)).items())[: args.top])
            for command in ("help", "predict")
        }
    seconds = {name: {command: summary(values) for command, values in found.items()} for name, found in timings.items()}
    ours = seconds["this tree"]
    result = {
        "repeats": args.repeats,
        "seconds": seconds,
        "goals_seconds": GOALS_SECONDS,
        "met": {command: ours[command]["median"] <= goal for command, goal in GOALS_SECONDS.items()},
        "import_ms_by_package": imports,
        "speedup": (
            {command: seconds["against"][command]["median"] / ours[command]["median"] for command in GOALS_SECONDS}
            if args.against
            else None
        ),
        "load_average": {"before": load_before, "after": load_after},
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "cli_start.json", result)
    for name, found in seconds.items():
        print(name, ", ".join(f"{command} {value['median']:.2f} s" for command, value in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
