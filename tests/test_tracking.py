"""Experiment tracking round trips: each log read back with its own library's reader.

TensorBoard through its EventAccumulator, the CSV through the csv module, MLflow through
MlflowClient, against a real `mlflow server` this file starts on 127.0.0.1 and against MLflow's
local default store. Training runs are tiny (2,000 images, the seed MLP).
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import digitlab
from digitlab import ConfigError, TrainConfig
from digitlab.cli import main

TINY = {"train_size": 2000, "lr": 5e-3}


def tiny_config(folder: Path, epochs: int = 2, **changes) -> TrainConfig:
    return TrainConfig(epochs=epochs, out=str(folder), **TINY, **changes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on a free port of 127.0.0.1, its stores in a temp folder; yields
    (uri, process) once it answers its health check, and stops its whole process group at the end.

    One server for the module, since starting one takes many seconds: the test that kills it mid-run
    comes last in this file.
    """
    port, folder = free_port(), tmp_path_factory.mktemp("mlflow-server")
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--workers",
        "1",
    ]
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_for(uri, process, folder / "server.log")
        yield uri, process
    finally:
        _stop_group(process)
        log.close()


def _wait_for(uri: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer within {timeout} s: {log.read_text()[-2000:]}")


def _stop_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM to the server's process group (it has uvicorn children), then after `grace` seconds
    SIGKILL to whatever of the group is left."""
    if grace:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_csv_and_tensorboard_read_back(mnist, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = digitlab.train(tiny_config(tmp_path / "run", log=["csv", "tensorboard"]), dataset=mnist, progress=True)
    history = run.metrics["history"]
    assert "epoch" in capsys.readouterr().err  # the progress bar, as text outside Jupyter

    with (tmp_path / "run" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert [float(row["val_accuracy"]) for row in rows] == pytest.approx([r["val_accuracy"] for r in history])

    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    validation = events.Scalars("accuracy/val")
    assert [event.step for event in validation] == [1, 2]
    assert [event.value for event in validation] == pytest.approx([r["val_accuracy"] for r in history], abs=1e-6)
    assert [event.value for event in events.Scalars("loss/train")] == pytest.approx(
        [r["train_loss"] for r in history], rel=1e-5
    )
    assert events.Scalars("hparam/test_accuracy")[0].value == pytest.approx(run.metrics["test_accuracy"], abs=1e-6)
    for tag in ("test/confusion matrix", "test/misclassified"):
        image = events.Images(tag)[0]
        assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 300
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["model"].string_value == "mlp"
    assert start.hparams["lr"].number_value == pytest.approx(5e-3)
    assert start.hparams["train_size"].number_value == 2000

    saved = digitlab.load_run(tmp_path / "run").metrics["tracking"]
    assert saved["csv"]["complete"] and saved["tensorboard"]["complete"]


def _mlflow_run(client, folder: Path):
    experiment = client.get_experiment_by_name("digitlab")
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`digitlab.run_folder` = '{folder.resolve()}'")
    return found


def _check_mlflow_round_trip(client, run, folder: Path) -> None:
    found = _mlflow_run(client, folder)
    assert found.info.status == "FINISHED"
    assert found.data.params["model"] == "mlp" and float(found.data.params["lr"]) == pytest.approx(5e-3)
    history = client.get_metric_history(found.info.run_id, "val_accuracy")
    history = sorted(history, key=lambda metric: metric.step)
    assert [metric.step for metric in history] == [record["epoch"] for record in run.metrics["history"]]
    assert [metric.value for metric in history] == pytest.approx([r["val_accuracy"] for r in run.metrics["history"]])
    assert found.data.metrics["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    artefacts = {item.path for item in client.list_artifacts(found.info.run_id)}
    assert {"model.safetensors", "config.json", "metrics.json", "report"} <= artefacts
    report = {item.path for item in client.list_artifacts(found.info.run_id, "report")}
    assert "report/index.html" in report
    model = client.download_artifacts(found.info.run_id, "model.safetensors", str(folder.parent / "download"))
    assert Path(model).read_bytes() == (folder / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_mlflow_server_round_trip(mnist, tmp_path, monkeypatch, mlflow_server):
    from mlflow.tracking import MlflowClient

    uri, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = digitlab.train(tiny_config(tmp_path / "run", log=["mlflow"]), dataset=mnist)
    assert run.metrics["tracking"]["mlflow"]["complete"]
    _check_mlflow_round_trip(MlflowClient(uri), run, tmp_path / "run")


@pytest.mark.slow
def test_mlflow_local_default_store(mnist, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    run = digitlab.train(tiny_config(tmp_path / "run", epochs=1, log=["mlflow"]), dataset=mnist)
    local = mlflow.get_tracking_uri()
    assert str(tmp_path) in local  # MLflow's own default, in the working folder
    assert run.metrics["tracking"]["mlflow"]["where"].startswith(local)
    _check_mlflow_round_trip(MlflowClient(), run, tmp_path / "run")


def test_unreachable_mlflow_server_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    out = tmp_path / "never"
    started = time.monotonic()
    code = main(["train", "--epochs", "1", "--train-size", "2000", "--log", "mlflow", "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1 and "unreachable" in error and "Traceback" not in error
    assert not out.exists()  # refused before a run folder was made, let alone training
    assert time.monotonic() - started < 60


def test_missing_tracker_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # an import of it now fails, as when not installed
    with pytest.raises(ConfigError, match=r"pip install 'digitlab\[mlflow\]'"):
        digitlab.train(TrainConfig(epochs=1, log=["mlflow"], out=str(tmp_path / "never")))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"pip install 'digitlab\[tensorboard\]'"):
        digitlab.train(TrainConfig(epochs=1, log=["tensorboard"], out=str(tmp_path / "never")))
    assert not (tmp_path / "never").exists()


def test_cli_says_where_logs_went_and_which_are_incomplete(mnist, tmp_path, capsys):
    folder = tmp_path / "run"
    (folder / "metrics.csv").mkdir(parents=True)  # a folder where the CSV must go: every write of it fails
    (folder / "metrics.csv" / "keep").write_text("")
    with pytest.warns(UserWarning) as warned:
        code = main(
            [
                "train",
                "--epochs",
                "2",
                "--train-size",
                "2000",
                "--log",
                "csv",
                "--log",
                "tensorboard",
                "--out",
                str(folder),
            ]
        )
    captured = capsys.readouterr()
    assert code == 0
    assert "csv log incomplete: failed at the start: cannot write" in captured.out
    assert f"tensorboard log: {folder}" in captured.out
    assert captured.out.rstrip().endswith(f"run saved to {folder}")
    # said once (the CLI prints a warning as one line), then the tracker is dropped
    about_csv = [str(item.message) for item in warned if "csv log" in str(item.message)]
    assert len(about_csv) == 1 and about_csv[0].startswith("csv log is incomplete: it failed at the start")
    saved = digitlab.load_run(folder)
    assert len(saved.metrics["history"]) == 2 and saved.metrics["tracking"]["csv"]["complete"] is False


def test_unknown_tracker_is_refused(capsys):
    with pytest.raises(ConfigError, match="unknown tracker"):
        TrainConfig(log=["wandb"])
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--log", "wandb"])
    assert stopped.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_mlflow_server_dying_mid_run_keeps_the_run(mnist, tmp_path, monkeypatch, mlflow_server):
    uri, process = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    folder = tmp_path / "run"

    def stop_server_after_first_epoch(record: dict) -> None:
        if record["epoch"] == 1:
            _stop_group(process, grace=0)  # as a crash would: no goodbye

    with pytest.warns(UserWarning, match="mlflow log is incomplete: it failed at epoch 1"):
        run = digitlab.train(
            tiny_config(folder, epochs=3, log=["mlflow", "csv"]), dataset=mnist, on_epoch=stop_server_after_first_epoch
        )
    assert len(run.metrics["history"]) == 3 and run.metrics["test_accuracy"] > 0.5
    saved = digitlab.load_run(folder)
    assert saved.metrics["tracking"]["mlflow"]["complete"] is False
    assert "epoch 1" in saved.metrics["tracking"]["mlflow"]["error"]
    assert saved.metrics["tracking"]["csv"]["complete"]
    assert len(list(csv.DictReader((folder / "metrics.csv").open()))) == 3
