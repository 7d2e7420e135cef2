"""Reading files by the million on Ray Data: a batch of image bytes and their names into rows of answers.

`BatchReader` is the callable class a Ray Data pipeline maps over its batches with an actor pool
(`Dataset.map_batches(BatchReader, fn_constructor_args=(open_reading,), concurrency=N)`): each actor calls
`open_reading()` once, which loads the model, and then turns batches of Ray's `read_binary_files` rows
(`path`, `bytes`), or of file names alone (`path`), into one row per file: `file`, `label`, `confidence`, `rejected` and its `reason`, `number` and
the digits' `boxes` in number mode, `error` for a file that cannot be read. The answers are `predict`'s and
`read_numbers`' own (the same decoding guards, preprocessing, rejection and number reading), called on the
files' bytes or paths. Loading a run lives a floor up (digitlab.runs.batch), hence the loader passed in.

Ray is an optional extra (`pip install 'digitlab[ray]'`): this module imports it, and pyarrow, only when a
pipeline runs.
"""

from __future__ import annotations

import glob
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..config import PreprocessOptions
from ..errors import ConfigError, DigitlabError
from ..files import atomic_write
from ..images.preprocess import IMAGE_SUFFIXES, EncodedPicture, image_files
from .numbers import NumberReading, read_numbers
from .predict import Prediction, predict

INSTALL = "pip install 'digitlab[ray]'"
OUT_SUFFIXES = (".parquet", ".jsonl")
FILES_PER_BLOCK = 256  # file names per block: small enough to spread a few thousand files over the workers


class EngineError(DigitlabError):
    """The batch engine cannot be used: Ray is not installed, or its head cannot be reached."""


@dataclass
class Reading:
    """What reading pictures needs, loaded once per worker: the model, its classes and preprocessing; in number
    mode the judge that parts touching digits (a run's segmenter); `batch_size` images per forward pass."""

    model: nn.Module
    classes: tuple
    options: PreprocessOptions
    number: bool = False
    judge: nn.Module | None = None
    batch_size: int = 512

    def rows(self, pictures: list) -> list[dict]:
        """One row per picture (paths or EncodedPicture), in order: predict's answer, or read_numbers' in number mode."""
        if self.number:
            readings = read_numbers(
                self.model, pictures, self.classes, self.options, "collect", self.batch_size, judge=self.judge
            )
            return [number_row(reading) for reading in readings]
        predictions = predict(
            self.model,
            pictures,
            self.classes,
            batch_size=self.batch_size,
            errors="collect",
            options=self.options,
            workers=1,  # an actor has one core: Ray runs one actor per core
        )
        return [prediction_row(prediction) for prediction in predictions]


def prediction_row(prediction: Prediction) -> dict:
    """A Prediction as a row: its ink box is the one box; `rejected` and `reason` are null for a model without
    a not-a-digit detector."""
    return _row(
        prediction.source,
        label=prediction.label,
        confidence=prediction.confidence,
        rejected=prediction.rejected,
        reason=prediction.rejection,
        boxes=[list(prediction.box)] if prediction.box else None,
        error=prediction.error,
    )


def number_row(reading: NumberReading) -> dict:
    """A NumberReading as a row: the number, the product of its digits' confidences, each digit's box."""
    if not reading.ok:
        return _row(reading.source, error=reading.error)
    boxes = [list(digit.box) for digit in reading.digits]
    return _row(reading.source, confidence=reading.confidence, number=reading.number, boxes=boxes)


def _row(file: str, **fields) -> dict:
    return {name: None for name in ROW_FIELDS} | {"file": file} | fields


ROW_FIELDS = ("file", "label", "confidence", "rejected", "reason", "number", "boxes", "error")


def row_schema():
    """The rows' Arrow schema, so every batch (and the Parquet file) has the same column types."""
    import pyarrow as pa

    return pa.schema(
        [
            ("file", pa.string()),
            ("label", pa.string()),
            ("confidence", pa.float64()),
            ("rejected", pa.bool_()),
            ("reason", pa.string()),
            ("number", pa.string()),
            ("boxes", pa.list_(pa.list_(pa.int64()))),
            ("error", pa.string()),
        ]
    )


class BatchReader:
    """Ray Data's callable class: loads the model once (`open_reading()`, a picklable function returning a
    Reading) and maps a batch of `read_binary_files(..., include_paths=True)` rows (`path` and `bytes`; `path`
    alone reads the files themselves) to a pyarrow Table of rows, one per file, in the batch's order."""

    def __init__(self, open_reading: Callable[[], Reading]):
        self.reading = open_reading()

    def __call__(self, batch: dict) -> object:
        import pyarrow as pa

        names = [str(name) for name in batch["path"]]
        pictures: list[EncodedPicture | Path]
        if "bytes" in batch:
            pictures = [EncodedPicture(name, bytes(data)) for name, data in zip(names, batch["bytes"], strict=True)]
        else:
            pictures = [Path(name) for name in names]
        return pa.Table.from_pylist(self.reading.rows(pictures), schema=row_schema())


@dataclass
class BatchSummary:
    """What a batch job did: files given, files read (answered, not refused), refused, errors, wall seconds."""

    files: int
    read: int
    refused: int
    errors: int
    seconds: float
    out: Path

    def line(self) -> str:
        return (
            f"{self.files:,} files: {self.read:,} read, {self.refused:,} refused, {self.errors:,} errors "
            f"in {self.seconds:.1f} s -> {self.out}"
        )


def source_files(sources: Iterable[str | Path]) -> list[str]:
    """The image files that `sources` name, as absolute paths: a folder's image files (by name), a glob's
    matches, a list file's lines (a text file naming one file a line; blank lines and # comments skipped), or
    a file itself. ConfigError naming a source that matches nothing."""
    files: list[str] = []
    for source in map(str, sources):
        path = Path(source)
        if path.is_dir():
            found = [str(child) for child in image_files(path)]
        elif path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
            found = _listed(path)
        elif path.is_file():
            found = [source]
        else:
            found = sorted(name for name in glob.glob(source, recursive=True) if Path(name).is_file())
        if not found:
            raise ConfigError(f"{source}: no image files there")
        files.extend(str(Path(name).absolute()) for name in found)
    return files


def _listed(list_file: Path) -> list[str]:
    """The files a list file names, relative ones taken from the list file's folder."""
    lines = (line.strip() for line in list_file.read_text(errors="replace").splitlines())
    return [str(list_file.parent / line) for line in lines if line and not line.startswith("#")]


def require_ray():
    """The ray module; EngineError naming the install command when the extra is missing."""
    try:
        import ray
        import ray.data  # ray[data]: the bare ray package lacks Ray Data's dependencies
    except ImportError:
        raise EngineError(f"--engine ray needs Ray Data, which is not installed: {INSTALL}") from None
    return ray


def connect(address: str | None = None) -> bool:
    """Connect this process to the Ray cluster whose head is at `address` ('host:port', 'ray://host:port' or
    'auto'), or start a local Ray on this machine when it is None; nothing when Ray is already connected.
    Returns whether it connected (so the caller knows to disconnect). EngineError, on one line, when the
    head cannot be reached."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address and address != "auto":
        _check_reachable(address)
    try:  # "local" starts a new Ray even where one runs on this machine already
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except Exception as error:  # Ray raises bare Exceptions too (a local node that does not start in time)
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        where = f"connect to the Ray head at {address}" if address else "start a local Ray"
        raise EngineError(f"could not {where}: {problem}") from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """EngineError unless a TCP connection to `address`'s host and port opens within `timeout` seconds (Ray's
    own connect retries for a minute before it gives up)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"a Ray head's address is host:port, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout).close()
    except OSError as error:
        raise EngineError(f"cannot reach the Ray head at {address} ({error.strerror or error})") from None


def read_rows(
    files: list[str],
    open_reading: Callable[[], Reading],
    workers: int | None = None,
    batch_size: int = 512,
) -> Iterator:
    """Read `files` on the connected Ray cluster with `workers` actors (None: one per CPU), each one loading the
    model once with `open_reading`; yield pyarrow Tables of rows as they arrive (any order, each file once).
    The actors read the files by path, `batch_size` of them per call, with load_image's guards: a separate
    read stage would need cores of its own (a pool holding every core leaves Ray's readers none, and the job
    waits for ever) and would copy every file's bytes through the object store."""
    ray = require_ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows its own, counted in files
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not the plan and timings of every run, nor notes
    actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    blocks = max(min(actors, len(files)), -(-len(files) // FILES_PER_BLOCK))  # at least a block for each actor
    paths = ray.data.from_items([{"path": name} for name in files], override_num_blocks=blocks)
    rows = paths.map_batches(
        BatchReader,
        fn_constructor_args=(open_reading,),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    yield from rows.iter_batches(batch_size=None, batch_format="pyarrow")


def write_rows(
    tables: Iterable, out: Path, expected: int | None = None, progress: Callable[[int], None] | None = None
) -> tuple[int, int, int]:
    """Write the row tables to `out` (.parquet, or .jsonl: one JSON object a line) through a temp file renamed
    at the end, unless the rows are not the `expected` many (EngineError, nothing written); `progress(rows)`
    hears of each table written. Returns (rows, refused, errors)."""
    counts = [0, 0, 0]

    def count(table) -> None:
        counts[0] += table.num_rows
        counts[1] += sum(bool(value) for value in table.column("rejected").to_pylist())
        counts[2] += table.num_rows - table.column("error").null_count
        if progress is not None:
            progress(counts[0])

    def check() -> None:
        if expected is not None and counts[0] != expected:
            raise EngineError(f"the engine returned {counts[0]:,} rows for {expected:,} files")

    def parquet(temp: str) -> None:
        import pyarrow.parquet as pq

        with pq.ParquetWriter(temp, row_schema()) as writer:
            for table in tables:
                writer.write_table(table)
                count(table)
        check()

    def jsonl(temp: str) -> None:
        with open(temp, "w") as lines:
            for table in tables:
                lines.writelines(json.dumps(row) + "\n" for row in table.to_pylist())
                count(table)
        check()

    if out.suffix not in OUT_SUFFIXES:
        raise ConfigError(f"{out}: the results file must end in {' or '.join(OUT_SUFFIXES)}")
    atomic_write(out, parquet if out.suffix == ".parquet" else jsonl)
    rows, refused, errors = counts
    return rows, refused, errors


def read_to_file(
    files: list[str],
    open_reading: Callable[[], Reading],
    out: Path,
    workers: int | None = None,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> BatchSummary:
    """read_rows into write_rows: the whole job on the connected cluster, timed; every file gets one row."""
    started = time.perf_counter()
    rows, refused, errors = write_rows(read_rows(files, open_reading, workers, batch_size), out, len(files), progress)
    return BatchSummary(len(files), rows - refused - errors, refused, errors, time.perf_counter() - started, out)
