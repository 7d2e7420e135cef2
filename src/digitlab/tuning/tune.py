"""Hyperparameter tuning with Optuna: a study that maximises validation accuracy, resumable and shared.

Every trial trains with `digitlab.train(..., save=False, test=False)`, so the test set is never
looked at, and reports the validation accuracy after each epoch to the pruner. The study lives in
an Optuna storage (default: SQLite in the study folder), so running the same command again
resumes it, and any number of processes, on one machine or several (PostgreSQL), can work on it.
`trials` counts finished trials (complete or pruned) of the whole study, not of one worker: a
worker starts a trial only while finished plus running trials are below it, then waits until the
running ones finish, so every worker ends with the same complete study.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..config import TrainConfig
from ..data.datasets import Dataset, load_dataset
from ..errors import ConfigError, DigitlabError, DivergenceError, RunError
from ..files import make_folder
from ..training.recipes import RECIPES, apply_recipe
from ..training.train import Interrupted, train
from .output import TuneResult, best_trial, trial_record, write_outputs, write_tables
from .space import Param, build_space, check_space, config_for, read_space_file
from .study import (
    GRACE_SECONDS,
    claimed_before,
    first_heartbeat,
    first_line,
    make_pruner,
    open_study,
    safe_url,
    study_trials,
)

WAIT_SECONDS = 1.0  # how often a worker waiting for others' last trials looks again
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial, in trials.csv
TrialCallback = Callable[[dict], None]


def base_config(model: str = "mlp") -> TrainConfig:
    """Where trials start: the model's 'fast' recipe (short, one-cycle runs) when it has one.

    The search space overrides what it searches; the recipe decides the rest (optimizer, warm-up),
    and its short schedules keep a trial to seconds.
    """
    config = TrainConfig(model=model)
    return apply_recipe(config, "fast") if model in RECIPES["fast"] else config


def tune(
    model: str = "mlp",
    trials: int = 20,
    *,
    base: TrainConfig | None = None,
    space: dict | str | Path | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    n_jobs: int = 1,
    pruner="median",
    seed: int | None = None,
    out: str | Path | None = None,
    dataset: Dataset | None = None,
    on_trial: TrialCallback | None = None,
    log: Callable[[str], None] | None = None,
    grace: int = GRACE_SECONDS,
) -> TuneResult:
    """Run (or resume) the study until it holds `trials` finished trials, then write its outputs.

    `base` is the config trials start from (default `base_config(model)`); `space` overrides the
    model's search space ({name: spec} or a TOML/JSON file). `timeout` stops starting trials after
    that many seconds; `n_jobs` runs trials in that many threads of this process (they share the
    cores; for more, start more processes on the same storage). `pruner` is "median", "hyperband",
    "none" or an Optuna pruner. `dataset`, if given, must be split as `base` says (val_size,
    split_seed). Outputs go to `out` (default tunes/<study>): best.json, trials.csv and the
    figures. `on_trial` gets `trial_record(...)` of every trial this process finishes, with the
    running best; `log` gets a line when this worker waits for other workers' trials. A worker
    that dies mid-trial (even by SIGKILL) has that trial failed `grace` seconds after its last
    heartbeat and retried with the same parameters by a worker still running (see tunestudy).
    """
    from sqlalchemy.exc import SQLAlchemyError

    base = base or base_config(model)
    name = _study_name(study or base.model)
    folder = Path(out) if out is not None else Path("tunes") / name
    _check_settings(trials, timeout, n_jobs, base, grace)
    overrides = read_space_file(space) if isinstance(space, (str, Path)) else space
    params = build_space(base.model, overrides)
    check_space(params, base)
    make_folder(folder, "study folder", ConfigError)
    url = storage or f"sqlite:///{folder / 'study.db'}"
    the_study = open_study(url, name, base.model, make_pruner(pruner, params, base), seed, grace)
    dataset = dataset or load_dataset(base.dataset, val_size=base.val_size, split_seed=base.split_seed)
    report = _Reporter(folder, on_trial)
    try:
        with CtrlC() as guard:
            objective = Objective(params, base, dataset, trials, guard)
            _run_workers(the_study, objective, trials, timeout, n_jobs, report, log, grace)
    except SQLAlchemyError as error:
        raise RunError(f"storage {safe_url(url)} failed: {first_line(error)}") from None
    except (KeyboardInterrupt, Interrupted):
        raise TuneInterrupted() from None
    return write_outputs(the_study, folder, new=len(report.finished))


class TuneInterrupted(DigitlabError):
    """Tuning stopped by Ctrl-C: finished trials stay in the study and the same command resumes it."""

    exit_code = 130

    def __init__(self):
        super().__init__("interrupted; finished trials are kept in the study: run the same command to resume it")


def _check_settings(trials: int, timeout: float | None, n_jobs: int, base: TrainConfig, grace: int) -> None:
    if not isinstance(grace, int) or grace < 2:  # heartbeats come every second at the fastest
        raise ConfigError(f"grace must be a whole number of seconds, at least 2, got {grace}")
    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be positive, got {timeout}")
    if n_jobs < 1:
        raise ConfigError(f"n-jobs must be at least 1, got {n_jobs}")
    if base.val_size <= 0:
        raise ConfigError("tuning needs a validation split (val_size > 0): the test set is never used")


def _study_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"study name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    return name


class Objective:
    """One trial: draw the parameters, train on the training split, return the final validation accuracy.

    A trial whose training diverges (DivergenceError) is pruned, its user attribute "diverged"
    saying where. A trial that finds the budget of `trials` already claimed by earlier-numbered ones (two workers
    started their last trials at the same instant) trains nothing: it ends as a failed trial marked
    "surplus", which no output counts.
    """

    def __init__(
        self, space: dict[str, Param], base: TrainConfig, dataset: Dataset, trials: int, guard: CtrlC | None = None
    ):
        self.space, self.base, self.dataset, self.trials = space, base, dataset, trials
        self.guard = guard or CtrlC()

    def __call__(self, trial) -> float:
        import optuna

        first_heartbeat(trial)
        if claimed_before(trial.study, trial.number) >= self.trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus()
        config = config_for({name: param.suggest(trial) for name, param in self.space.items()}, self.base)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("worker", WORKER)

        def on_epoch(record: dict) -> None:
            with self.guard.storage():
                trial.report(record["val_accuracy"], record["epoch"])
                prune = trial.should_prune()
            if prune:
                raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

        try:
            with self.guard.training():
                run = train(config, dataset=self.dataset, on_epoch=on_epoch, save=False, test=False)
        except DivergenceError as error:  # a result about these parameters, not a crash: the sampler learns from it
            trial.set_user_attr("diverged", error.where)
            raise optuna.TrialPruned(error.where) from None
        return run.metrics["val_accuracy"]


class CtrlC:
    """Ctrl-C while tuning, made safe: it stops a trial that is training at once (the trial is recorded
    as failed), but never cuts a storage call in half; a request that arrives during one takes effect
    right after it. Other workers stop before their next trial. A second Ctrl-C stops at once.
    Only the main thread receives signals, so only its trials are interrupted mid-training.
    """

    def __init__(self):
        self.stop, self.requested, self._training, self._previous = threading.Event(), False, False, None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.stop.set()
        signal.signal(signal.SIGINT, self._previous)
        if self._training:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def training(self):
        """Mark the main thread as training (interruptible); other threads are left alone."""
        main = threading.current_thread() is threading.main_thread()
        self._training = main
        try:
            if main and self.requested:
                raise KeyboardInterrupt
            yield
        finally:
            if main:
                self._training = False

    @contextlib.contextmanager
    def storage(self):
        """Hold off an interruption during a storage call, then deliver it."""
        main, was = threading.current_thread() is threading.main_thread(), self._training
        if main:
            self._training = False
        try:
            yield
        finally:
            if main:
                self._training = was
                if was and self.requested:
                    raise KeyboardInterrupt


class _Surplus(Exception):
    """Raised by a trial started after the study's budget was already claimed."""


def _run_workers(
    study,
    objective: Objective,
    trials: int,
    timeout: float | None,
    n_jobs: int,
    report,
    log: Callable[[str], None] | None = None,
    grace: int = GRACE_SECONDS,
) -> None:
    """Run trials in `n_jobs` threads until the study holds `trials` finished ones (or time runs out).

    While the running trials of other workers would fill the budget, a worker waits for them rather
    than leaving: if one of them fails or its worker dies (its heartbeat stops), it runs another.
    """
    import optuna

    deadline = None if timeout is None else time.monotonic() + timeout
    stop, errors = objective.guard.stop, []

    def work() -> None:
        waiting = False
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                optuna.storages.fail_stale_trials(study)
                finished = len(study_trials(study, "finished"))
                if finished >= trials:
                    return
                claimed = claimed_before(study, None)
                if claimed >= trials:
                    if log is not None and not waiting:
                        log(
                            f"waiting for the {claimed - finished} running trial(s) of other workers; a dead "
                            f"worker's trial is retried {grace} s after its last heartbeat"
                        )
                    waiting = True
                    stop.wait(WAIT_SECONDS)
                    continue
                waiting = False
                study.optimize(objective, n_trials=1, callbacks=[report], catch=(_Surplus,))
        except BaseException as error:
            stop.set()
            errors.append(error)

    helpers = [threading.Thread(target=work, daemon=True) for _ in range(n_jobs - 1)]
    for helper in helpers:
        helper.start()
    try:
        work()
        for helper in helpers:
            if not errors and not objective.guard.requested:  # after Ctrl-C or an error, leave the others' trials
                helper.join()
    finally:
        stop.set()
    if errors:
        raise errors[0]
    if objective.guard.requested:
        raise KeyboardInterrupt


class _Reporter:
    """Study callback: after each finished trial, refresh best.json and trials.csv and tell `on_trial`."""

    def __init__(self, folder: Path, on_trial: TrialCallback | None):
        self.folder, self.on_trial = folder, on_trial
        self.finished: list[int] = []

    def __call__(self, study, frozen) -> None:
        if frozen.user_attrs.get("surplus"):
            return
        self.finished.append(frozen.number)
        trials = study.get_trials(deepcopy=False)
        write_tables(study, trials, self.folder)
        if self.on_trial is not None:
            record = trial_record(frozen)
            best = best_trial(trials)
            record["best_value"], record["best_trial"] = (best.value, best.number) if best else (None, None)
            self.on_trial(record)
