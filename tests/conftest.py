import glob
import gzip
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import digitlab
from digitlab import TrainConfig
from digitlab.inference.nondigits import missing_font_packages

# The real parts some tests need, each installed by `make deps` (tools/system-deps.sh), which `make test`
# runs first: marker -> (is it here?, what it is, the Debian package). A test marked with one of these
# skips when the part is missing, naming it, and fails instead under CI=true, where it can always be had.
PARTS = {
    "browser": (lambda: Path("/usr/bin/chromium").exists(), "Debian's chromium (/usr/bin/chromium)", "chromium"),
    "postgres": (lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")), "PostgreSQL's server", "postgresql"),
    "fashion": (
        lambda: Path("/usr/share/datasets/fashion-mnist").is_dir(),
        "Fashion-MNIST (/usr/share/datasets/fashion-mnist)",
        "dataset-fashion-mnist",
    ),
    "npm": (lambda: shutil.which("npm") is not None, "npm", "npm"),
    "fonts": (
        lambda: not missing_font_packages(),
        "the handwriting fonts of the non-digit suite",
        " ".join(missing_font_packages()),
    ),
}
# fixtures that need a part: every test using one is marked with it, so `-m "not browser"` leaves it out
FIXTURE_PARTS = {"browser": "browser", "postgres": "postgres", "fashion": "fashion", "web_page": "npm"}


def require(part: str) -> None:
    """Skip (fail under CI) the current test when `part` of PARTS is not on this machine, naming the fix."""
    present, what, package = PARTS[part]
    if present():
        return
    message = f"{what} is missing: run `make deps` (or: apt-get install {package})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, part in FIXTURE_PARTS.items():
            if fixture in item.fixturenames:
                item.add_marker(part)


def pytest_runtest_setup(item):
    for part in PARTS:
        if item.get_closest_marker(part) is not None:
            require(part)


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, fetched into the cache if needed and held in memory for the whole session."""
    return digitlab.load_dataset("mnist")


@pytest.fixture(scope="session")
def seed_run(mnist, tmp_path_factory):
    """The seed MLP trained for one epoch on real MNIST and saved as a run folder.

    The seed recipe's lr 1e-3 falls short of 93% after one epoch; lr 5e-3 (same batch 64) clears it.
    """
    out = tmp_path_factory.mktemp("runs") / "seed-1epoch"
    return digitlab.train(TrainConfig(epochs=1, lr=5e-3, out=str(out)), dataset=mnist)


@pytest.fixture(scope="session")
def web_page(seed_run, tmp_path_factory):
    """The seed MLP exported with `export --format web` (onnxruntime-web from the cache, fetched with npm when
    missing): the folder and export_web's report."""
    require("npm")
    out = tmp_path_factory.mktemp("web") / "page"
    return out, digitlab.export_web(seed_run, out=out)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Encode an array as an IDX file (big-endian, as the format asks)."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    data = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def tiny_dataset_arrays(count: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Small generated MNIST-shaped files: raw file name -> array."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)  # noqa: E731
    labels = lambda n: np.arange(n, dtype=np.uint8) % 10  # noqa: E731
    return {
        "train-images-idx3-ubyte": images(count),
        "train-labels-idx1-ubyte": labels(count),
        "t10k-images-idx3-ubyte": images(count // 2),
        "t10k-labels-idx1-ubyte": labels(count // 2),
    }


@pytest.fixture(scope="module")
def browser():
    """A headless chromium shared by a browser test module's tests (see browsers.py)."""
    from browsers import chromium

    with chromium() as launched:
        yield launched
