"""Teach the shipped model to say "not a digit" (digitlab.inference.rejection) and write it back.

Digits: the real-world suite rendered from MNIST's training split (`--digits` per condition) and read
by the model's own preprocessing, plus MNIST training digits as they are. Non-digits: the training part
of the non-digit suite (`--nondigits` of each kind), read the same way. The threshold accepts
`--quantile` of the suite's digits rendered from the validation split; the validation part of the
non-digit suite is scored and printed (what a choice between settings would look at); the test parts
are never touched here (benchmarks/nondigits.py reports on them).

    python benchmarks/ship_rejection.py [--digits 1500] [--nondigits 2500] [--quantile 0.995] [--out FILE]

The prepared pictures are cached in runs/rejection-pictures-DIGITS-NONDIGITS.pt (delete it to prepare them again).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

import digitlab
from digitlab.inference.nondigits import KINDS, as_sample, render_nondigits
from digitlab.inference.ood import observe
from digitlab.inference.realworld import read_suite, render_suite
from digitlab.inference.rejection import fit_learned_detector
from digitlab.runs.shipped import SHIPPED_MODEL, load_shipped, ship

CACHE = "runs/rejection-pictures-{digits}-{nondigits}.pt"  # prepared pictures, by the counts that made them


def _read(samples, options) -> tuple[torch.Tensor, torch.Tensor]:
    suite = read_suite(samples, options)
    return suite.images, suite.refused


def _prepare(task: str, run_preprocess: dict, digits: int, nondigits: int):
    """One of the four sets of pictures, in a process of its own (rendering and preprocessing dominate)."""
    from digitlab.config import PreprocessOptions

    options = PreprocessOptions(**run_preprocess)
    mnist, fashion = digitlab.load_dataset("mnist"), digitlab.load_dataset("fashion-mnist")
    if task == "digits":
        return _read(render_suite(mnist.train.images, mnist.train.labels, digits, seed=100), options)
    if task == "val_digits":
        return _read(render_suite(mnist.val.images, mnist.val.labels, max(100, digits // 5), seed=0), options)
    part, split, fashion_split, count = (
        ("train", mnist.train, fashion.train, nondigits)
        if task == "nondigits"
        else ("val", mnist.val, fashion.val, max(50, nondigits // 10))
    )
    pictures = list(render_nondigits(part, count, split, fashion_split))
    images, refused = _read((as_sample(p) for p in pictures), options)
    return images, refused, torch.tensor([KINDS.index(p.kind) for p in pictures])


def prepared(run, digits: int, nondigits: int) -> dict[str, torch.Tensor]:
    """uint8 pictures as predict prepares them: train digits, train non-digits, val digits, val non-digits."""
    cache = Path(CACHE.format(digits=digits, nondigits=nondigits))
    if cache.is_file():
        return torch.load(cache)
    tasks = ("digits", "nondigits", "val_digits", "val_nondigits")
    with ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(_prepare, task, run.preprocess.to_dict(), digits, nondigits) for task in tasks]
        done = {task: job.result() for task, job in zip(tasks, jobs, strict=True)}
    mnist = digitlab.load_dataset("mnist")
    pictures = {
        "digits": torch.cat([done["digits"][0][~done["digits"][1]], mnist.train.images[:10_000]]),
        "nondigits": done["nondigits"][0][~done["nondigits"][1]],
        "val_digits": done["val_digits"][0][~done["val_digits"][1]],
        "val_nondigits": done["val_nondigits"][0],
        "val_refused": done["val_nondigits"][1],
        "val_kinds": done["val_nondigits"][2],
    }
    cache.parent.mkdir(exist_ok=True)
    torch.save(pictures, cache)
    return pictures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=1500, help="training digits rendered per condition")
    parser.add_argument("--nondigits", type=int, default=2500, help="training non-digits of each kind")
    parser.add_argument("--quantile", type=float, default=0.995, help="share of validation digits accepted")
    parser.add_argument("--out", type=Path, default=SHIPPED_MODEL, help="model file to write")
    args = parser.parse_args()
    run = load_shipped()
    started = time.perf_counter()
    pictures = prepared(run, args.digits, args.nondigits)
    print(
        f"{len(pictures['digits']):,} digits, {len(pictures['nondigits']):,} non-digits, "
        f"{len(pictures['val_digits']):,} validation digits prepared ({time.perf_counter() - started:.0f} s)"
    )
    base = run.ood
    assert base is not None and base.method != "learned-judge", "start from the Mahalanobis detector"
    detector = fit_learned_detector(
        run.model, base, pictures["digits"], pictures["nondigits"], pictures["val_digits"], args.quantile
    )
    run.model.ood = detector
    seen = observe(run.model, pictures["val_nondigits"])
    refused = detector.rejects(detector.score(seen)) | pictures["val_refused"]
    for number, kind in enumerate(KINDS):
        mine = pictures["val_kinds"] == number
        print(f"validation {kind}: {refused[mine].double().mean():.1%} turned away")
    print(f"validation non-digits: {refused.double().mean():.1%} turned away, threshold {detector.threshold:.2f}")
    metrics = dict(run.metrics) if isinstance(run.metrics, dict) else {}
    metrics["rejection"] = {"digits": args.digits, "nondigits": args.nondigits, "quantile": args.quantile}
    ship(run, args.out, metrics)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
