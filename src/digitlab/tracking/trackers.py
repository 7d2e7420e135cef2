"""Experiment trackers: TensorBoard event files, MLflow runs and a CSV of per-epoch metrics.

Each is off unless `config.log` names it (`digitlab train --log tensorboard --log mlflow --log csv`).
A tracker's factory checks what it can before training starts (its package is installed, the MLflow
server answers) and raises a one-line ConfigError; once training runs, `digitlab.tracking.registry.Trackers`
keeps a tracker's failure from costing the run. The factories register themselves by name with
`digitlab.tracking.registry` when this module is imported (the package's `__init__` does so).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..config import TrainConfig
from ..data.datasets import Dataset
from ..errors import ConfigError
from ..figures.predictions import confusion_matrix, misclassified_overview
from ..files import atomic_write
from ..inference.evaluate import predict_logits
from ..runs.report import write_report
from ..runs.run import CONFIG_FILE, METRICS_FILE, MODEL_FILE, Run
from .registry import register_tracker

CSV_FILE = "metrics.csv"
CSV_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
EXPERIMENT = "digitlab"  # the MLflow experiment, unless MLFLOW_EXPERIMENT_NAME names another
# Each scalar of an epoch's record, by its TensorBoard tag (grouped as TensorBoard shows them).
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "lr": "lr",
    "seconds": "seconds per epoch",
}


def _extra(name: str) -> str:
    return f"--log {name} needs the {name} package: pip install 'digitlab[{name}]'"


def flat_config(config: TrainConfig) -> dict[str, str | int | float | bool]:
    """The resolved config as flat scalar settings (model_kwargs.hidden, …): what trackers take as params."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for inner, item in items:
            name = f"{key}.{inner}" if inner else key
            flat[name] = item if isinstance(item, (str, int, float, bool)) else json.dumps(item)
    return flat


@register_tracker("csv")
class CsvLog:
    """RUN/metrics.csv: one row per epoch, rewritten whole (atomically) after each, so a resumed run keeps one file."""

    def __init__(self, config: TrainConfig):
        self.path: Path | None = None
        self.rows: list[dict] = []

    def start(self, folder: Path, config: TrainConfig, history: list[dict]) -> None:
        self.path, self.rows = folder / CSV_FILE, list(history)
        self._write()

    def epoch(self, record: dict) -> None:
        self.rows.append(record)
        self._write()

    def finish(self, run: Run, dataset: Dataset) -> dict:
        return {"where": str(self.path)}

    def _write(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        assert self.path is not None  # start() came first
        atomic_write(self.path, lambda temp: Path(temp).write_text(text.getvalue()))


@register_tracker("tensorboard")
class TensorBoardLog:
    """Event files in the run folder, so `tensorboard --logdir runs` shows every run by its folder name:
    the scalars of every epoch, the config as text, and at the end the test figures, the confusion
    matrix and misclassified digits as images, and the config as hparams with the final accuracies
    (which TensorBoard also shows as scalars `hparam/...`)."""

    def __init__(self, config: TrainConfig):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(_extra("tensorboard")) from None
        self.make_writer = SummaryWriter
        self.writer: SummaryWriter | None = None

    def start(self, folder: Path, config: TrainConfig, history: list[dict]) -> None:
        # A resumed run drops whatever a killed process logged after its last checkpoint.
        self.writer = self.make_writer(str(folder), purge_step=len(history) + 1 if history else None)
        self.writer.add_text("config", f"```\n{json.dumps(config.to_dict(), indent=2)}\n```", 0)
        self.writer.flush()

    def epoch(self, record: dict) -> None:
        assert self.writer is not None  # start() came first
        for key, tag in SCALAR_TAGS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], record["epoch"])
        self.writer.flush()  # a crash later loses nothing already logged

    def finish(self, run: Run, dataset: Dataset) -> dict:
        assert self.writer is not None and run.path is not None
        step = run.metrics.get("epoch") or 0
        final = {
            f"hparam/{key}": run.metrics[key]
            for key in ("test_accuracy", "val_accuracy", "test_loss")
            if run.metrics.get(key) is not None
        }
        if run.metrics.get("test"):
            self.writer.add_figure("test/confusion matrix", confusion_matrix(_confusion(run), run.classes), step)
            probabilities = predict_logits(run.model, dataset.test.images).softmax(1)
            grid = misclassified_overview(dataset.test.images, dataset.test.labels, probabilities, run.classes)
            self.writer.add_figure("test/misclassified", grid, step)
        self.writer.add_hparams(flat_config(run.config), final, run_name=".")
        self.writer.close()
        return {"where": str(run.path)}


def _confusion(run: Run):
    import torch

    return torch.tensor(run.metrics["test"]["confusion_matrix"])


@register_tracker("mlflow")
class MlflowLog:
    """One MLflow run per training run, at MLFLOW_TRACKING_URI or MLflow's local default: the resolved
    config as params, every epoch's metrics by step, the final accuracies, and as artefacts the model
    file, config.json, metrics.json and the visual report (written into the run folder for it)."""

    def __init__(self, config: TrainConfig):
        try:
            import mlflow
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(_extra("mlflow")) from None
        self.uri = mlflow.get_tracking_uri()
        _check_server(self.uri)
        with _client_settings():
            try:
                self.client = MlflowClient(self.uri)
                name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
                found = self.client.get_experiment_by_name(name)
                self.experiment = found.experiment_id if found else self.client.create_experiment(name)
            except Exception as error:  # MLflow raises many kinds; each is a store we cannot use
                raise ConfigError(f"MLflow tracking store {self.uri} is unusable: {_first_line(error)}") from None
        self.run_id = ""

    def start(self, folder: Path, config: TrainConfig, history: list[dict]) -> None:
        from mlflow.entities import Param

        with _client_settings():
            tags = {"digitlab.run_folder": str(folder.resolve()), "mlflow.runName": folder.name}
            self.run_id = self.client.create_run(self.experiment, tags=tags).info.run_id
            params = [Param(key, str(value)) for key, value in flat_config(config).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                self.client.log_batch(self.run_id, params=params[start : start + 100])
            for record in history:  # a resumed run: the epochs before it, again
                self._log_epoch(record)

    def epoch(self, record: dict) -> None:
        with _client_settings():
            self._log_epoch(record)

    def _log_epoch(self, record: dict) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), record["epoch"]
        metrics = [
            Metric(key, value, now, step) for key, value in record.items() if key != "epoch" and value is not None
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run: Run, dataset: Dataset) -> dict:
        from mlflow.entities import Metric

        assert run.path is not None
        report = write_report(run)
        now, step = int(time.time() * 1000), run.metrics.get("epoch") or 0
        final = [
            Metric(key, run.metrics[key], now, step)
            for key in ("test_accuracy", "test_loss", "train_seconds", "parameters")
            if run.metrics.get(key) is not None
        ]
        with _client_settings():
            self.client.log_batch(self.run_id, metrics=final)
            for name in (MODEL_FILE, CONFIG_FILE, METRICS_FILE):
                self.client.log_artifact(self.run_id, str(run.path / name))
            self.client.log_artifacts(self.run_id, str(report.parent), "report")
            self.client.set_terminated(self.run_id, "FINISHED")
        return {"where": f"{self.uri} (run {self.run_id})", "run_id": self.run_id, "report": str(report)}


def _check_server(uri: str) -> None:
    """A server URI must answer its health check within seconds; MLflow's own client would retry for minutes."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as answer:
            answer.read()
    except urllib.error.HTTPError as error:
        raise ConfigError(f"MLflow tracking server {uri} answers its health check with HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it or set MLFLOW_TRACKING_URI"
        ) from None


@contextlib.contextmanager
def _client_settings():
    """MLflow's HTTP calls retry 7 times with growing pauses (minutes in all); a server that goes away
    mid-run should cost seconds. And digitlab says where the run went in its own line, so MLflow's
    links on stdout are left out. Settings the user made are kept."""
    settings = {
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    }
    added = {key: value for key, value in settings.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
