"""The package as users get it: `python -m build` makes an sdist and, from that sdist alone, a wheel; the wheel
installed (not editable) into a fresh virtual environment trains, reports, predicts with the shipped model and
serves the demo page, importing nothing from this checkout.

The fresh environment has no dependencies of its own: downloading torch here would take gigabytes. It sees
the current environment's site-packages through a .pth line, which adds that folder to sys.path without
running the .pth files inside it, so the editable install of this checkout stays out of reach; the test
checks where `digitlab` was imported from.
"""

import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from digitlab import __version__
from scans import png_bytes, render_scan

ROOT = Path(__file__).resolve().parents[1]
SERVE_TIMEOUT = 60


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist and the wheel built from it, in a temporary folder."""
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (sdist,) = out.glob("digitlab-*.tar.gz")
    (wheel,) = out.glob("digitlab-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def fresh(dist, tmp_path_factory):
    """A new virtual environment with only the wheel installed in it; returns its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site,) = venv.glob("lib/python*/site-packages")
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
    subprocess.run([*pip, "--no-deps", "--no-index", str(dist[1])], env=_environment(), check=True, timeout=300)
    # after installing, so pip cannot take this checkout's editable install for the wheel it was given
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _environment() -> dict:
    """This process's environment without anything that would put the checkout on the path."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run(command: list, cwd: Path, timeout: int = 300) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    return result.stdout


def test_the_version_has_one_source_and_both_archives_carry_it(dist):
    sdist, wheel = dist
    assert sdist.name == f"digitlab-{__version__}.tar.gz" and wheel.name.startswith(f"digitlab-{__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"digitlab-{__version__}.dist-info/METADATA").decode()
    assert re.search(rf"^Version: {re.escape(__version__)}$", metadata, re.MULTILINE)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "digitlab.version.__version__"}


def test_the_wheel_holds_the_package_its_page_and_the_shipped_weights(dist):
    with zipfile.ZipFile(dist[1]) as archive:
        names = set(archive.namelist())
    package = {path.relative_to(ROOT / "src").as_posix() for path in (ROOT / "src" / "digitlab").rglob("*.py")}
    assert package <= names
    assert {
        "digitlab/serving/static/index.html",
        "digitlab/serving/static/app.js",
        "digitlab/serving/static/app.css",
    } <= names
    assert {f"digitlab/weights/{path.name}" for path in (ROOT / "src/digitlab/weights").glob("*.safetensors")} <= names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)


def test_the_sdist_holds_what_a_checkout_needs(dist):
    with tarfile.open(dist[0]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = ["pyproject.toml", "README.md", "MANIFEST.in", "Makefile", "src/digitlab/serving/static/index.html"]
    needed += ["mkdocs.yml", "docs/hooks/results.py", "benchmarks/tables.py", "experiments/augmentation/plot.png"]
    needed += [path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").glob("*.py")]
    needed += [path.relative_to(ROOT).as_posix() for path in (ROOT / "notebooks").glob("*.ipynb")]
    needed += [path.relative_to(ROOT).as_posix() for path in (ROOT / "src/digitlab/weights").glob("*.safetensors")]
    assert set(needed) <= names, sorted(set(needed) - names)
    assert not any("__pycache__" in name for name in names)


@pytest.mark.slow
def test_the_installed_wheel_trains_reports_predicts_and_serves(fresh, mnist, tmp_path):
    where = _run(
        [fresh / "python", "-c", "import digitlab, sys, json; print(json.dumps([digitlab.__file__, sys.path]))"],
        tmp_path,
    )
    module, path = json.loads(where)
    # the checkout's own folders must not be importable; its .venv (CI keeps it inside the checkout) may be
    checkout = {ROOT, ROOT / "src"}
    assert Path(module).is_relative_to(fresh.parent) and not checkout & {
        Path(entry or tmp_path).resolve() for entry in path
    }
    _run([fresh / "digitlab", "train", "--epochs", "1", "--train-size", "5000", "--out", "run"], tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5  # the seed recipe, one epoch of 5,000 digits: about 70%, chance 10%
    _run([fresh / "digitlab", "report", "run"], tmp_path)
    assert (tmp_path / "run" / "report" / "index.html").is_file()
    scan = tmp_path / "seven.png"
    scan.write_bytes(png_bytes(render_scan(mnist.test.images[0, 0].numpy(), np.random.default_rng(5))))
    (answer,) = json.loads(_run([fresh / "digitlab", "predict", "seven.png", "--json"], tmp_path))
    assert answer["label"] == str(int(mnist.test.labels[0]))  # the shipped weights came with the wheel
    _check_served_page([fresh / "digitlab", "serve", "run", "--port", "0"], tmp_path)


def _check_served_page(command: list, cwd: Path) -> None:
    server = subprocess.Popen(command, cwd=cwd, env=_environment(), stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # "serving ... on http://127.0.0.1:PORT — Ctrl-C to stop"
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        with urllib.request.urlopen(url.group(0) + "/", timeout=SERVE_TIMEOUT) as page:
            assert page.status == 200 and "<canvas" in page.read().decode()
        with urllib.request.urlopen(url.group(0) + "/static/app.js", timeout=SERVE_TIMEOUT) as script:
            assert script.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
