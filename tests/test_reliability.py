"""Reliability: exact resume after SIGKILL, clean Ctrl-C, safe loading, disk trouble, multi-process training."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import digitlab
from digitlab import TrainConfig
from digitlab.errors import RunError
from digitlab.runs.checkpoint import CHECKPOINT_FILE, load_checkpoint
from digitlab.runs.run import MODEL_FORMAT, load_model
from test_cli import assert_one_line_error, run_cli

SRC = Path(digitlab.__file__).parent


def comparable(metrics: dict) -> dict:
    """metrics.json without wall-clock times, which no two runs share."""
    history = [{k: v for k, v in record.items() if k != "seconds"} for record in metrics["history"]]
    return {**{k: v for k, v in metrics.items() if k != "train_seconds"}, "history": history}


KILL_ARGS = ["--epochs", "3", "--engine", "autograd", "--batch-size", "16", "--train-size", "4000"]
# `digitlab train` as the CLI runs it, except that after step 100 of the second epoch (of 250) it writes
# the file argv[1] and waits there, so a signal the test sends on seeing the file lands mid-epoch, always
PAUSED_MID_EPOCH = """
import sys, threading
from pathlib import Path
from digitlab.cli import main
from digitlab.training.steps import AutogradStep

marker, taken, take_step = Path(sys.argv[1]), [], AutogradStep.__call__
STEPS_PER_EPOCH = 250  # --train-size 4000 in batches of 16

def paused_in_the_second_epoch(step, *batch):
    if len(taken) == STEPS_PER_EPOCH + 100:
        marker.write_text("step 100 of epoch 2")
        threading.Event().wait()  # until a signal ends the process
    taken.append(1)
    return take_step(step, *batch)

AutogradStep.__call__ = paused_in_the_second_epoch
sys.exit(main(["train", *sys.argv[2:]]))
"""


def start_paused_training(folder: Path, marker: Path):
    """`digitlab train KILL_ARGS --out folder` in a child process; returns it once it waits mid-epoch 2."""
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_MID_EPOCH, str(marker), *KILL_ARGS, "--out", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    wait_for_file(marker, process)
    assert (folder / CHECKPOINT_FILE).exists()  # epoch 1's: what a resume must start from
    return process


def wait_for_file(path: Path, process, timeout=120):
    """Until `path` exists (polled), failing when the process ends first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, mnist):
    straight = run_cli("train", *KILL_ARGS, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    process = start_paused_training(killed, tmp_path / "mid-epoch")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL and not (killed / "model.safetensors").exists()
    resumed = run_cli("train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    read = lambda folder: json.loads((folder / "metrics.json").read_text())  # noqa: E731
    assert comparable(read(killed)) == comparable(read(tmp_path / "straight"))


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, mnist):
    folder = tmp_path / "run"
    process = start_paused_training(folder, tmp_path / "mid-epoch")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines() == [
        f"digitlab: error: interrupted; the checkpoint of the last complete "
        f"epoch is kept; resume with: digitlab train --resume {folder}"
    ]
    model = digitlab.create_model("mlp")
    optimizer = torch.optim.Adam(model.parameters())
    progress = load_checkpoint(folder / CHECKPOINT_FILE, model, optimizer, torch.Generator())
    assert progress.epoch == 1 and len(progress.history) == 1


@pytest.mark.slow
def test_resume_extends_a_finished_run_and_refuses_other_flags(tmp_path, mnist):
    small = digitlab.Dataset("mnist", mnist.classes, mnist.train.take(5000), mnist.val.take(500), mnist.test)
    digitlab.train(TrainConfig(epochs=1, out=str(tmp_path / "run")), dataset=small)
    longer = digitlab.resume(tmp_path / "run", epochs=2, dataset=small)
    straight = digitlab.train(TrainConfig(epochs=2), dataset=small, save=False)
    assert comparable(longer.metrics) == comparable(straight.metrics)
    assert_one_line_error(
        run_cli("train", "--resume", str(tmp_path / "run"), "--batch-size", "32"), "drop --batch-size"
    )
    assert_one_line_error(run_cli("train", "--resume", str(tmp_path / "nothing")), "no run folder")


# --- reproducibility ------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_warns_when_the_data_differ_from_training(seed_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in seed_run.path.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    saved = json.loads((copy / "config.json").read_text())
    saved["dataset"]["sha256"]["t10k-images-idx3-ubyte"] = "0" * 64
    (copy / "config.json").write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="trained on different mnist files"):
        digitlab.evaluate(copy)
    result = run_cli("evaluate", str(copy))
    assert result.returncode == 0
    assert result.stderr.strip().splitlines() == [
        "digitlab: warning: run was trained on different mnist files than the ones evaluated now"
    ]


# --- safe loading ---------------------------------------------------------------------------------


def _model_file(path: Path, tensors: dict) -> Path:
    save_file(tensors, str(path), metadata={"format": MODEL_FORMAT, "model": "mlp", "model_kwargs": "{}"})
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.pop("net.4.bias"), "missing \\['net.4.bias'\\]"),
        (lambda t: t.update(extra=torch.zeros(1)), "unexpected \\['extra'\\]"),
        (lambda t: t.update({"net.0.weight": torch.zeros(32, 783)}), "net.0.weight is torch.float32 \\(32, 783\\)"),
        (lambda t: t.update({"net.0.bias": torch.zeros(32, dtype=torch.float64)}), "net.0.bias is torch.float64"),
    ],
)
def test_tensors_that_do_not_fit_the_declared_model_are_refused(tmp_path, change, message):
    tensors = {name: tensor.clone() for name, tensor in digitlab.create_model("mlp").state_dict().items()}
    change(tensors)
    with pytest.raises(RunError, match=message):
        load_model(_model_file(tmp_path / "m.safetensors", tensors))


def test_truncated_files_are_refused(seed_run, tmp_path):
    for name in ("model.safetensors", CHECKPOINT_FILE):
        data = (seed_run.path / name).read_bytes()
        for cut in (0, 7, len(data) // 2, len(data) - 1):
            (tmp_path / name).write_bytes(data[:cut])
            with pytest.raises(RunError):
                if name == CHECKPOINT_FILE:
                    model = digitlab.create_model("mlp")
                    load_checkpoint(tmp_path / name, model, torch.optim.Adam(model.parameters()), torch.Generator())
                else:
                    load_model(tmp_path / name)


def test_nothing_unpickles_user_files():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


# --- disk trouble ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_unwritable_output_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(run_cli("train", "--epochs", "1", "--out", str(blocker / "run")), "cannot create run folder")


@pytest.mark.slow
def test_a_full_disk_is_a_one_line_error(tmp_path, mnist):
    def small_files():  # files may not grow past 100 kB: the 300 kB checkpoint cannot be written
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "--epochs", "1", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        stdin=subprocess.DEVNULL,
    )
    assert_one_line_error(result, "cannot write", CHECKPOINT_FILE)
    json.loads((tmp_path / "run" / "config.json").read_text())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


def test_a_failed_write_keeps_the_previous_checkpoint_intact(tmp_path, mnist, monkeypatch):
    from digitlab.runs import checkpoint

    small = digitlab.Dataset("mnist", mnist.classes, mnist.train.take(3000), mnist.val.take(300), mnist.test.take(300))
    writes = []

    def save_or_fail(tensors, path, metadata):
        writes.append(path)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", save_or_fail)
    with pytest.raises(RunError, match="No space left on device"):
        digitlab.train(TrainConfig(epochs=3, out=str(tmp_path / "run")), dataset=small)
    model = digitlab.create_model("mlp")
    progress = load_checkpoint(
        tmp_path / "run" / CHECKPOINT_FILE, model, torch.optim.Adam(model.parameters()), torch.Generator()
    )
    assert progress.epoch == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [CHECKPOINT_FILE, "config.json"]


# --- several processes ----------------------------------------------------------------------------


def torchrun(*args):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "digitlab", *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path, mnist):
    """Tolerance: after two epochs every weight within 1e-4 of single-process training, same accuracy to 0.1 points."""
    subset = ["--train-size", "20000", "--threads", "1"]
    first = torchrun("train", "--epochs", "1", *subset, "--out", str(tmp_path / "ddp"))
    assert first.returncode == 0, first.stderr
    second = torchrun("train", "--resume", str(tmp_path / "ddp"), "--epochs", "2")
    assert second.returncode == 0, second.stderr
    single = run_cli("train", "--epochs", "2", *subset, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    ddp, one = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    for name in one:
        # the out-of-distribution statistics are derived from the weights; precision entries run to
        # thousands, so they are held to a relative tolerance instead
        relative = name.startswith("ood.")
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-4 if relative else 0, atol=0 if relative else 1e-4)
    read = lambda folder: json.loads((tmp_path / folder / "metrics.json").read_text())  # noqa: E731
    assert len(read("ddp")["history"]) == 2
    assert abs(read("ddp")["test_accuracy"] - read("one")["test_accuracy"]) <= 0.001
