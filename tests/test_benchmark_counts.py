"""How the benchmarks count: only right answers are throughput, and a number's dropped and invented digits
are each counted, never netted against each other (benchmarks/common.py, benchmarks/whole_numbers.py)."""

import importlib
import sys
from pathlib import Path

import pytest

from digitlab.inference.predict import Prediction

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def benchmark_module():
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import `common` as their own folder's module
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_tally_puts_each_answer_in_exactly_one_place(benchmark_module):
    tally = benchmark_module("common").tally
    answers = [
        Prediction("a", label="3"),
        Prediction("b", label="5"),
        Prediction("c", label="7", rejected=True),
        Prediction("d", error="not an image"),
        Prediction("e", label="1", rejected=False),
    ]
    assert tally(answers, ["3", "3", "7", "2", "1"]) == {"right": 2, "wrong": 1, "refused": 1, "errors": 1}
    with pytest.raises(ValueError):  # an answer without its label is a bug in the benchmark, not a miss
        tally(answers, ["3"])


def test_a_dropped_digit_and_an_invented_one_both_count(benchmark_module):
    match = benchmark_module("whole_numbers").match
    boxes = [(0, 0, 10, 20), (12, 0, 22, 20), (24, 0, 34, 20)]  # "123", left to right
    # the 2 lost, and a speck beyond the 3 read as a 7: same length as the truth, one of each
    read = [("1", (0, 0, 10, 20)), ("3", (24, 0, 34, 20)), ("7", (40, 0, 48, 20))]
    assert match(read, "123", boxes) == {"right": 2, "wrong": 0, "dropped": 1, "invented": 1}
    # the 1 cut in two, the 2 misread, the 3 merged into it
    read = [("1", (0, 0, 4, 20)), ("1", (5, 0, 10, 20)), ("8", (12, 0, 34, 20))]
    assert match(read, "123", boxes) == {"right": 0, "wrong": 1, "dropped": 1, "invented": 1}
    assert match([], "12", boxes[:2]) == {"right": 0, "wrong": 0, "dropped": 2, "invented": 0}
