"""A run, or the shipped model, reading files on a Ray cluster: `read_with_ray`, and `RunReader` for a pipeline of
one's own. The reading itself is digitlab.inference.batch's; this module loads the run on each worker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..inference.batch import BatchReader, BatchSummary, Reading, connect, read_to_file, require_ray, source_files
from .run import Run
from .shipped import resolve_run


def open_reading(
    run: Run | str | None = None,
    number: bool = False,
    preprocess: str | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> Reading:
    """What a worker reads with: `run` (a Run, a run folder or model file; None: the shipped model) loaded on
    `device`, its preprocessing changed by `preprocess` steps ("no-stroke,deskew"), its segmenter in `number` mode."""
    loaded = resolve_run(run, device)
    options = loaded.preprocess.with_steps(preprocess) if preprocess else loaded.preprocess
    judge = loaded.segmenter() if number else None
    return Reading(loaded.model, loaded.classes, options, number, judge, batch_size)


def reading_opener(run: Run | str | Path | None = None, **settings) -> Callable[[], Reading]:
    """open_reading with these arguments, as a picklable function for Ray's workers (a path made absolute: a
    worker's working folder is not the caller's)."""
    if isinstance(run, (str, Path)):
        run = str(Path(run).absolute())
    return functools.partial(open_reading, run, **settings)


class RunReader(BatchReader):
    """BatchReader for a run (or the shipped model): `dataset.map_batches(RunReader, fn_constructor_kwargs={"run":
    "runs/my-run"}, concurrency=4)` over `ray.data.read_binary_files(..., include_paths=True)`. Keyword
    arguments as for open_reading."""

    def __init__(self, run: Run | str | Path | None = None, **settings):
        super().__init__(reading_opener(run, **settings))


def read_with_ray(
    source: str | Path | Iterable[str | Path],
    out: str | Path,
    run: Run | str | Path | None = None,
    address: str | None = None,
    workers: int | None = None,
    number: bool = False,
    preprocess: str | None = None,
    batch_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> BatchSummary:
    """Read every image file `source` names (a folder, a glob, a list file, or several) with `run` (None: the
    shipped model) on the Ray cluster at `address` (None: a local Ray started for this job and stopped after),
    `workers` actors (None: one per CPU), and write one row per file to `out` (.parquet or .jsonl; see
    digitlab.inference.batch for the columns). `progress(done, total)` hears of the rows as they are written."""
    ray = require_ray()
    files = source_files([source] if isinstance(source, (str, Path)) else source)
    opener = reading_opener(run, number=number, preprocess=preprocess, batch_size=batch_size)
    counted = None if progress is None else lambda done: progress(done, len(files))
    started = connect(address)
    try:
        return read_to_file(files, opener, Path(out), workers, batch_size, counted)
    finally:
        if started:
            ray.shutdown()
