"""The experiment trackers a training run reports to, seen from training: what one is, how it is
found by name, and the fan-out that keeps a failing one from stopping the run.

The trackers themselves (TensorBoard, MLflow, CSV) live in `digitlab.tracking`, a floor up, because
their last act draws the run's figures; each registers its factory here by name (as models do in
`digitlab.models`), so `train` can open the ones `config.log` names without importing them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..config import TrainConfig
from ..errors import ConfigError


class Tracker(Protocol):
    """One experiment tracker. The factory that makes it checks everything it can before training
    starts (the package is installed, the server answers) and raises a one-line ConfigError if not."""

    def start(self, folder: Path, config: TrainConfig, history: list[dict]) -> None:
        """The run folder exists and config.json is written; `history` holds epochs done before a resume."""

    def epoch(self, record: dict) -> None:
        """One epoch's record (see digitlab.training.train.fit)."""

    def finish(self, run: Any, dataset: Any) -> dict:
        """The run is tested and saved; returns what to record about the log (where it is)."""


TrackerFactory = Callable[[TrainConfig], Tracker]
_FACTORIES: dict[str, TrackerFactory] = {}


def register_tracker(name: str) -> Callable[[TrackerFactory], TrackerFactory]:
    """Decorator: make `factory(config)` the tracker that `config.log` calls `name`."""

    def register(factory: TrackerFactory) -> TrackerFactory:
        _FACTORIES[name] = factory
        return factory

    return register


class Trackers:
    """The trackers of one run. A tracker that fails mid-run is reported once (a warning), dropped and
    recorded as incomplete; training, testing and saving the run go on without it."""

    def __init__(self, trackers: dict[str, Tracker]):
        self.active = dict(trackers)
        self.status: dict[str, dict] = {name: {"complete": True} for name in trackers}

    @classmethod
    def open(cls, config: TrainConfig) -> Trackers:
        """The trackers `config.log` names, each checked before any training happens."""
        missing = [name for name in config.log if name not in _FACTORIES]
        if missing:
            raise ConfigError(f"no tracker registered as {missing[0]!r} (import digitlab.tracking first)")
        return cls({name: _FACTORIES[name](config) for name in config.log})

    def start(self, folder: Path, config: TrainConfig, history: list[dict]) -> None:
        self._each("start", "the start", folder, config, history)

    def epoch(self, record: dict) -> None:
        self._each("epoch", f"epoch {record['epoch']}", record)

    def finish(self, run: Any, dataset: Any) -> dict:
        """Let every tracker still running finish; returns each one's record (`complete`, where it logged)."""
        for name, tracker in list(self.active.items()):
            try:
                self.status[name].update(tracker.finish(run, dataset) or {})
            except Exception as error:  # a tracker's own failure never costs the run
                self._fail(name, "the end of the run", error)
        return self.status

    def _each(self, method: str, moment: str, *arguments) -> None:
        """Call `method` of every tracker still running; `moment` names when, for the warning."""
        for name, tracker in list(self.active.items()):
            try:
                getattr(tracker, method)(*arguments)
            except Exception as error:  # a tracker's own failure never costs the run
                self._fail(name, moment, error)

    def _fail(self, name: str, moment: str, error: Exception) -> None:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        self.active.pop(name, None)
        self.status[name].update(complete=False, error=f"failed at {moment}: {reason}")
        warnings.warn(f"{name} log is incomplete: it failed at {moment} ({reason}); training goes on", stacklevel=2)


class EpochBar:
    """A progress bar over epochs: a widget in Jupyter, text on a terminal (tqdm.auto), on stderr."""

    def __init__(self, total_epochs: int, done_epochs: int = 0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_epochs, initial=done_epochs, unit="epoch", dynamic_ncols=True)

    def update(self, record: dict) -> None:
        self.bar.set_postfix(
            loss=f"{record['train_loss']:.4f}",
            acc=f"{record['train_accuracy']:.4f}",
            val_acc=f"{record['val_accuracy'] or 0:.4f}",
        )
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def all_of(*listeners: Callable[[dict], None] | None) -> Callable[[dict], None]:
    """One epoch callback that calls each listener given, in order."""
    active = [listener for listener in listeners if listener]

    def tell(record: dict) -> None:
        for listener in active:
            listener(record)

    return tell
