"""Batch reading on Ray (digitlab.inference.batch, digitlab.runs.batch, `digitlab predict --engine ray`).

The `ray`-marked tests start a real cluster once for the module: a head and a second node, each `ray start` in
its own process group on the loopback network (benchmarks/raynodes.py), one core and 150 MB of object store each,
and read a couple of thousand generated picture files through the command line, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.data.datasets import load_dataset
from digitlab.inference.batch import BatchReader, prediction_row, source_files
from digitlab.runs.batch import RunReader, reading_opener
from digitlab.runs.shipped import load_shipped

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from raynodes import Cluster, cluster_env

DIGITS, SCRIBBLES = 2000, 40


def write_pictures(folder: Path, digits: int = DIGITS, seed: int = 0) -> list[Path]:
    """MNIST test digits as 56×56 dark-on-white PNGs, random scribbles (some turned away as not digits) and one
    corrupt file."""
    folder.mkdir(parents=True, exist_ok=True)
    images = load_dataset("mnist").splits()["test"].images[:digits, 0].numpy()
    paths = []
    for number, digit in enumerate(images):
        paths.append(folder / f"digit-{number:05d}.png")
        Image.fromarray(255 - digit).resize((56, 56)).save(paths[-1])
    rng = np.random.default_rng(seed)
    for number in range(SCRIBBLES):
        page = np.full((64, 64), 255, np.uint8)
        for _ in range(rng.integers(2, 6)):  # a few thick random strokes
            x, y = rng.integers(8, 56, 2)
            page[max(0, y - 3) : y + 3, max(0, x - rng.integers(3, 20)) : x + rng.integers(3, 20)] = 0
        paths.append(folder / f"scribble-{number:03d}.png")
        Image.fromarray(page).save(paths[-1])
    paths.append(folder / "corrupt.png")
    paths[-1].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return paths


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    return write_pictures(tmp_path_factory.mktemp("pictures"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("ray"), cluster_env())
    try:
        cluster.start_head(cpus=1, object_store_mb=150)
        cluster.add_node(cpus=1, object_store_mb=150)
        yield cluster
    finally:
        cluster.stop()


def digitlab(*arguments: str, env: dict | None = None, wait: bool = True):
    command = [sys.executable, "-m", "digitlab", *arguments]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.ray
@pytest.mark.slow
def test_ray_answers_equal_predict_on_every_file(cluster, pictures, tmp_path):
    out = tmp_path / "results.parquet"
    done = digitlab(
        "predict", str(pictures[0].parent), "--engine", "ray", "--address", cluster.address, "--out", str(out),
        "--batch-size", "128", env=cluster.env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]  # the corrupt file is an error, the job is not
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{len(pictures):,} files: ") and "1 errors" in summary, summary

    import pyarrow.parquet as pq

    rows = {row["file"]: row for row in pq.read_table(out).to_pylist()}
    assert len(rows) == len(pictures) == pq.read_metadata(out).num_rows
    expected = load_shipped().predict([str(path) for path in pictures], errors="collect")
    for prediction in expected:
        row = rows[prediction.source]
        want = prediction_row(prediction)
        assert {key: row[key] for key in ("label", "rejected", "reason", "boxes", "error")} == {
            key: want[key] for key in ("label", "rejected", "reason", "boxes", "error")
        }, prediction.source
        if want["confidence"] is not None:
            assert abs(row["confidence"] - want["confidence"]) <= 1e-6
    assert rows[str(pictures[-1])]["error"] and sum(row["error"] is not None for row in rows.values()) == 1
    assert any(row["rejected"] for row in rows.values()), "no picture turned away: the refusals went untested"


@pytest.mark.ray
@pytest.mark.slow
def test_a_worker_node_killed_mid_job_loses_and_doubles_nothing(cluster, pictures, tmp_path):
    """The cluster's last test: it kills the second node while an actor there reads."""
    second = cluster.nodes[1]
    out = tmp_path / "results.jsonl"
    job = digitlab(
        "predict", str(pictures[0].parent), "--engine", "ray", "--address", cluster.address, "--out", str(out),
        "--workers", "2", "--batch-size", "16", env=cluster.env, wait=False,
    )  # fmt: skip
    try:
        assert _wait_for_actor(second, job), "no reading actor started on the second node"
        time.sleep(1.0)
        assert job.poll() is None, "the job ended before the node could be killed"
        second.kill()
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 1, stderr[-3000:]
    files = [row["file"] for row in read_rows(out)]
    assert sorted(files) == sorted(str(path) for path in pictures)  # each file exactly once


def _wait_for_actor(node, job, timeout: float = 180) -> bool:
    """Whether one of `node`'s processes became a reading actor (Ray titles it after the class) while `job` runs."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None:
        for process in node.processes():
            with contextlib.suppress(psutil.Error):
                if "BatchReader" in " ".join(process.cmdline()):
                    return True
        time.sleep(0.2)
    return False


@pytest.mark.ray
def test_an_unreachable_head_is_one_line_and_exit_2(tmp_path, pictures):
    from raynodes import free_ports

    done = digitlab(
        "predict", str(pictures[0]), "--engine", "ray", "--address", f"127.0.0.1:{free_ports(1)[0]}",
        "--out", str(tmp_path / "out.parquet"),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("digitlab: error: cannot reach the Ray head at 127.0.0.1:")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.ray
def test_a_local_ray_that_does_not_start_is_one_line(monkeypatch):
    """Ray raises a bare Exception when a local node misses its start-up window (a busy machine)."""
    import ray

    from digitlab.inference.batch import EngineError, connect

    def slow_start(**settings):
        raise Exception("The current node timed out during startup. This could happen because ...\nmore")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", slow_start)
    with pytest.raises(EngineError) as raised:
        connect(None)
    assert (
        str(raised.value)
        == "could not start a local Ray: The current node timed out during startup. This could happen because ..."
    )


def test_without_the_extra_the_engine_names_the_install_command(tmp_path):
    tmp_path.joinpath("a.png").write_bytes(b"")
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed: `import ray` raises ImportError
        "from digitlab.cli import main\n"
        f"sys.exit(main(['predict', {str(tmp_path)!r}, '--engine', 'ray', '--out', {str(tmp_path / 'o.jsonl')!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert (
        done.stderr
        == "digitlab: error: --engine ray needs Ray Data, which is not installed: pip install 'digitlab[ray]'\n"
    )


def test_bytes_and_paths_give_the_rows_predict_gives(tmp_path):
    """The actor's own code without a cluster: Ray's read_binary_files batches (path and bytes) and batches of
    paths alone give predict's answers, in order."""
    pytest.importorskip("pyarrow")
    paths = write_pictures(tmp_path / "pictures", digits=30)
    names = np.array([str(path) for path in paths], dtype=object)
    data = np.array([path.read_bytes() for path in paths], dtype=object)
    reader = RunReader()
    from_bytes = reader({"path": names, "bytes": data}).to_pylist()
    from_paths = reader({"path": names}).to_pylist()
    expected = [prediction_row(p) for p in load_shipped().predict(list(names), errors="collect")]
    for rows in (from_bytes, from_paths):
        assert [row["file"] for row in rows] == list(names)
        for row, want in zip(rows, expected, strict=True):
            assert {k: v for k, v in row.items() if k != "confidence"} == {
                k: v for k, v in want.items() if k != "confidence"
            }
            assert want["confidence"] is None or abs(row["confidence"] - want["confidence"]) <= 1e-6


def test_number_mode_rows_are_read_numbers_answers(tmp_path):
    pytest.importorskip("pyarrow")
    from digitlab.inference.numbers import compose_number

    split = load_dataset("mnist").splits()["test"]
    rng = np.random.default_rng(1)
    page, _ = compose_number([split.images[index, 0].numpy() for index in (0, 1, 2)], rng)
    Image.fromarray(page).save(tmp_path / "number.png")
    names = np.array([str(tmp_path / "number.png")], dtype=object)
    [row] = BatchReader(reading_opener(number=True))({"path": names}).to_pylist()
    [reading] = load_shipped().read_number([tmp_path / "number.png"])
    assert row["number"] == reading.number and len(row["boxes"]) == len(reading.digits)
    assert row["boxes"] == [list(digit.box) for digit in reading.digits]
    assert abs(row["confidence"] - reading.confidence) <= 1e-6


def test_sources_are_folders_globs_and_list_files(tmp_path):
    for name in ("b.png", "a.png", "notes.txt"):
        tmp_path.joinpath(name).write_bytes(b"x")
    listing = tmp_path / "files.txt"
    listing.write_text("a.png\n# a comment\n\nb.png\n")
    folder = sorted(str(tmp_path / name) for name in ("a.png", "b.png"))
    assert source_files([tmp_path]) == folder
    assert source_files([str(tmp_path / "*.png")]) == folder
    assert source_files([listing]) == folder
    with pytest.raises(Exception, match="no image files there"):
        source_files([str(tmp_path / "*.jpg")])
