"""Not a digit, measured the way users meet it: pictures written to files and read by `predict`.

The test part of the non-digit suite (digitlab.inference.nondigits: letters, words, symbols, doodles,
scribbles, two digits side by side, Fashion-MNIST items, photo crops, blank paper; `--count` of each
kind), Fashion-MNIST test items as 28×28 PNG files, and the real-world suite's test digits
(digitlab.inference.realworld, `--digits` per condition) all go through `Run.predict` as files, as
`digitlab predict FOLDER` reads them. A non-digit counts as turned away when predict refuses it
(`rejected`) or finds no digit in it (a per-file error such as "no ink"); a digit counts as wrongly
refused the same way, and as read when it is accepted with the right label.

Goals (issue 25): >= 95% of the non-digits turned away overall and >= 85% of every kind, <= 1% of
the real-world digits refused, >= 95% of Fashion-MNIST files turned away, and the shipped model
reading >= 98.5% of the real-world digits. Exits 1 when a goal is missed.

    python benchmarks/nondigits.py [RUN] [--count 300] [--digits 300] [--fashion 1000]

Writes benchmarks/results/nondigits.json (or nondigits-NAME.json with --name).
"""

from __future__ import annotations

import argparse
import time

import digitlab
from common import write_result
from digitlab.inference.nondigits import read_as_files, score_nondigits, turned_away
from digitlab.inference.realworld import render_suite
from digitlab.runs.shipped import resolve_run

GOALS = {"turned_away": 0.95, "each_kind": 0.85, "digits_refused": 0.01, "fashion_files": 0.95, "digits_read": 0.985}


def predict_files(run):
    return lambda paths: run.predict(paths, errors="collect")


def png(pixels) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def measure_fashion_files(run, count: int) -> dict:
    items = digitlab.load_dataset("fashion-mnist").test.images[:count, 0].numpy()
    predictions = read_as_files(predict_files(run), ((f"f{i:05d}.png", png(item)) for i, item in enumerate(items)))
    return {"count": len(predictions), "turned_away": sum(map(turned_away, predictions)) / len(predictions)}


def measure_digits(run, count: int) -> dict:
    test = digitlab.load_dataset("mnist").test
    samples = list(render_suite(test.images, test.labels, count, seed=0))
    pictures = ((f"d{i:05d}{s.suffix}", s.data) for i, s in enumerate(samples))
    predictions = read_as_files(predict_files(run), pictures)
    refused = [turned_away(pred) for pred in predictions]
    read = [not r and pred.label == str(s.label) for pred, r, s in zip(predictions, refused, samples, strict=True)]
    by_condition = {}
    for name in dict.fromkeys(s.condition for s in samples):
        picks = [i for i, s in enumerate(samples) if s.condition == name]
        by_condition[name] = {
            "refused": sum(refused[i] for i in picks) / len(picks),
            "read": sum(read[i] for i in picks) / len(picks),
        }
    return {
        "count": len(samples),
        "refused": sum(refused) / len(refused),
        "read": sum(read) / len(read),
        "conditions": by_condition,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="a run folder or model file (default: the shipped model)")
    parser.add_argument("--count", type=int, default=300, help="non-digits of each kind (default 300)")
    parser.add_argument("--digits", type=int, default=300, help="real-world digits per condition (default 300)")
    parser.add_argument("--fashion", type=int, default=1000, help="Fashion-MNIST test items as files (default 1000)")
    parser.add_argument("--name", default="", help="suffix of the results file")
    args = parser.parse_args()
    run = resolve_run(args.run)
    started = time.perf_counter()
    mnist, fashion_data = digitlab.load_dataset("mnist"), digitlab.load_dataset("fashion-mnist")
    nondigits = score_nondigits(predict_files(run), mnist.test, fashion_data.test, "test", args.count)
    fashion = measure_fashion_files(run, args.fashion)
    digits = measure_digits(run, args.digits)
    worst = min(kind["turned_away"] for kind in nondigits["kinds"].values())
    met = {
        "turned_away": nondigits["turned_away"] >= GOALS["turned_away"],
        "each_kind": worst >= GOALS["each_kind"],
        "digits_refused": digits["refused"] <= GOALS["digits_refused"],
        "fashion_files": fashion["turned_away"] >= GOALS["fashion_files"],
        "digits_read": digits["read"] >= GOALS["digits_read"],
    }
    result = {
        "run": args.run or "shipped",
        "can_reject": run.ood is not None or "none" in run.classes,
        "nondigits": nondigits,
        "fashion_files": fashion,
        "digits": digits,
        "goals": GOALS,
        "goals_met": met,
        "seconds": time.perf_counter() - started,
    }
    write_result(f"nondigits{'-' + args.name if args.name else ''}", result)
    print(f"non-digits turned away {nondigits['turned_away']:.1%} (worst kind {worst:.1%}); ", end="")
    print(" ".join(f"{kind} {value['turned_away']:.0%}" for kind, value in nondigits["kinds"].items()))
    print(
        f"Fashion-MNIST files turned away {fashion['turned_away']:.1%}; real-world digits refused "
        f"{digits['refused']:.2%}, read {digits['read']:.2%}; goals met: {met}"
    )
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
