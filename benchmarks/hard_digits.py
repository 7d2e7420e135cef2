"""Three kinds of single digit that real users' pictures hold and the real-world suite renders rarely.

- `tiny_faint`: a crop a few dozen px across, the digit 9-19 px tall in ink 35-90 gray levels lighter
  than it should be, as a digit cut out of a larger scan or screenshot arrives;
- `grey_paper`: dark, clean ink on grey paper (60-190 gray levels), cropped close, PNG or JPEG;
- `flagged_ones`: a 1 written with a long flag (the up-stroke at its top, 30-70% of its height, as
  much of Europe writes it), which MNIST's mostly bare 1s make easy to read as a 7.

Digits come from MNIST's test split; the flagged 1s are drawn by digitlab.inference.styles (from a seed
that training never uses). Every picture is read by `predict` as a file, and each answer is counted right, wrong, refused
or error (common.tally). The flagged 1s also report how many were read as 7.

    python benchmarks/hard_digits.py [--count 300]

Writes benchmarks/results/hard_digits.json.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

import digitlab
from common import tally, write_result
from digitlab.inference import realworld
from digitlab.inference.nondigits import draw_polylines, field_of, read_as_files
from digitlab.inference.realworld import CONDITIONS
from digitlab.inference.styles import flagged_one
from digitlab.runs.shipped import load_shipped


def tiny_faint(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    coverage = realworld._coverage(realworld.stroke_mask(digit, rng.uniform(0.8, 1.4)), int(rng.integers(9, 20)))
    paper = rng.uniform(170, 235)
    page = realworld._sheet(coverage, rng, margin=(1.1, 1.6), paper=paper, ink=paper - rng.uniform(35, 90))
    return realworld._encode(realworld._noise(page, rng, rng.uniform(0.5, 3))), ".png"


def grey_paper(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    coverage = realworld._coverage(realworld.stroke_mask(digit, rng.uniform(0.8, 1.3)), int(rng.integers(40, 240)))
    paper = rng.uniform(60, 190)
    page = realworld._sheet(coverage, rng, margin=(1.05, 1.6), paper=paper, ink=rng.uniform(0, 0.4) * paper)
    suffix = ".jpg" if rng.random() < 0.5 else ".png"
    return realworld._encode(realworld._noise(page, rng, rng.uniform(1, 4)), suffix), suffix


def render(kind: str, count: int, test: digitlab.data.datasets.Split, seed: int = 0):
    """(name, bytes) of `count` pictures of `kind` and their labels."""
    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    conditions = list(CONDITIONS)
    pictures, labels = [], []
    for index in range(count):
        if kind == "flagged_ones":
            field = field_of(draw_polylines([flagged_one(rng)], rng))
            data, suffix = CONDITIONS[conditions[index % len(conditions)]](field, rng)
            label = 1
        else:
            number = int(rng.integers(len(test)))
            data, suffix = KINDS[kind](test.images[number, 0].numpy(), rng)
            label = int(test.labels[number])
        pictures.append((f"{index:05d}-{kind}{suffix}", data))
        labels.append(str(label))
    return pictures, labels


KINDS = {"tiny_faint": tiny_faint, "grey_paper": grey_paper, "flagged_ones": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="pictures of each kind")
    args = parser.parse_args()
    run, test = load_shipped(), digitlab.load_dataset("mnist").test
    kinds = {}
    for kind in KINDS:
        pictures, labels = render(kind, args.count, test)
        answers = read_as_files(lambda paths: run.predict(paths, errors="collect"), pictures)
        counts = tally(answers, labels)
        kinds[kind] = {**counts, "read": counts["right"] / len(answers), "count": len(answers)}
        if kind == "flagged_ones":
            kinds[kind]["read_as"] = dict(Counter(answer.label for answer in answers if answer.ok).most_common())
        print(f"{kind}: {kinds[kind]['read']:.1%} read ({counts})")
    print(f"wrote {write_result('hard_digits', {'count': args.count, 'model': 'shipped', 'kinds': kinds})}")


if __name__ == "__main__":
    main()
