"""The command line: happy paths in-process, and every bad input as a one-line error with exit code 2."""

import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_dataset_arrays, write_idx
from digitlab.cli import main


def run_cli(*args, env=None):
    """Run `python -m digitlab ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "digitlab", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_evaluate_json_matches_metrics_json(seed_run, capsys):
    assert main(["evaluate", str(seed_run.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    saved = json.loads((seed_run.path / "metrics.json").read_text())
    assert report["test_accuracy"] == pytest.approx(saved["test_accuracy"], abs=1e-12)
    assert len(report["confusion_matrix"]) == 10 and len(report["per_class"]) == 10


def test_evaluate_prints_a_readable_report(seed_run, capsys):
    assert main(["evaluate", str(seed_run.path)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "precision" in out and "confusion matrix" in out


def test_data_info_prints_counts_per_split(mnist, capsys):
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "train 55,000, val 5,000, test 10,000" in out


@pytest.mark.slow
def test_train_from_the_cli_writes_a_run(tmp_path, mnist):
    result = run_cli("train", "--epochs", "1", "--batch-size", "256", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and str(tmp_path / "run") in result.stdout
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["batch_size"] == 256


@pytest.mark.parametrize(
    "args, needles",
    [
        (["train", "--model", "nope"], ["invalid choice: 'nope'"]),
        (["train", "--dataset", "nope"], ["invalid choice: 'nope'"]),
        (["train", "--epochs", "-3"], ["epochs must be at least 1"]),
        (["evaluate", "/no/such/run"], ["no run folder at /no/such/run"]),
    ],
)
def test_bad_input_is_a_one_line_error(args, needles):
    assert_one_line_error(run_cli(*args), *needles)


@pytest.mark.slow
def test_corrupt_run_folder_is_a_one_line_error(tmp_path, seed_run):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "metrics.json"):
        (broken / name).write_bytes((seed_run.path / name).read_bytes())
    (broken / "model.safetensors").write_bytes((seed_run.path / "model.safetensors").read_bytes()[:300])
    assert_one_line_error(run_cli("evaluate", str(broken)), "model.safetensors")
    (broken / "model.safetensors").unlink()
    assert_one_line_error(run_cli("evaluate", str(broken)), "model.safetensors is missing")


def test_corrupt_data_file_is_a_one_line_error(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, array in tiny_dataset_arrays().items():
        write_idx(folder / name, array)
    result = run_cli("data", "info", env={"DIGITLAB_DATA": str(tmp_path)})
    assert_one_line_error(result, "SHA-256 mismatch", "train-images-idx3-ubyte")


HEAVY = ("torch", "matplotlib", "scipy", "mlflow", "tensorboard", "optuna", "onnx", "fastapi")
QUICK_COMMANDS = (
    ["--help"],
    ["--version"],
    ["predict", "--help"],
    ["serve", "--help"],
    ["runs", "--sort"],
    ["bogus"],
    ["predict"],
    ["train", "--epochs", "many"],
    ["tune", "--trials"],
)


def test_help_and_argument_errors_import_nothing_heavy():
    """`digitlab --help` and usage mistakes answer without loading torch, matplotlib or a tracker: each is
    parsed in a fresh interpreter, which then names every heavy package it holds."""
    script = (
        "import sys\n"
        "from digitlab.cli import build_parser\n"
        "try:\n"
        "    build_parser().parse_args(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('loaded:' + ','.join(name for name in {HEAVY!r} if name in sys.modules), file=sys.stderr)\n"
    )
    for argv in QUICK_COMMANDS:
        result = subprocess.run(
            [sys.executable, "-c", script, *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
        )
        assert result.stderr.splitlines()[-1] == "loaded:", f"digitlab {' '.join(argv)}: {result.stderr}"


def test_a_registry_choice_is_still_checked():
    """The model names are read lazily, but a wrong one is still a one-line error naming the right ones."""
    result = run_cli("train", "--model", "nope")
    assert_one_line_error(result, "invalid choice: 'nope'", "'mlp'")
