"""Hyperparameter tuning with Optuna: a study that maximises validation accuracy, resumable and shared.

Every trial trains with `digitlab.train(..., save=False, test=False)`, so the test set is never
looked at, and reports the validation accuracy after each epoch to the pruner. The study lives in
an Optuna storage (default: SQLite in the study folder), so running the same command again
resumes it, and any number of processes, on one machine or several (PostgreSQL), can work on it.
`trials` counts finished trials (complete or pruned) of the whole study, not of one worker: each
worker starts a trial only while finished plus running trials are below it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import TrainConfig
from .data import Dataset, load_dataset
from .errors import ConfigError, DigitlabError, RunError
from .recipes import RECIPES, apply_recipe
from .runs import atomic_write, write_json
from .train import Interrupted, train
from .tunespace import Param, build_space, check_space, config_for, read_space_file

PRUNERS = ("median", "hyperband", "none")
BEST_FILE, TRIALS_FILE = "best.json", "trials.csv"
FIGURES = ("history.png", "importances.png", "parallel.png", "curves.png")
HEARTBEAT_SECONDS = 20  # a worker that dies has its running trial failed after the grace period
GRACE_SECONDS = 120
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial, in trials.csv
TrialCallback = Callable[[dict], None]


@dataclass
class TuneResult:
    """What a tuning call leaves: the study's best trial, its full config, and the files written."""

    study: str
    folder: Path
    finished: int  # finished trials of the whole study (complete or pruned)
    pruned: int
    new: int  # trials this call ran
    best_value: float | None
    best_trial: int | None
    best_params: dict = field(default_factory=dict)
    best_config: TrainConfig | None = None
    files: list[Path] = field(default_factory=list)


def base_config(model: str = "mlp") -> TrainConfig:
    """Where trials start: the model's 'fast' recipe (short, one-cycle runs) when it has one.

    The search space overrides what it searches; the recipe decides the rest (optimizer, warm-up),
    and its short schedules keep a trial to seconds.
    """
    config = TrainConfig(model=model)
    return apply_recipe(config, "fast") if model in RECIPES["fast"] else config


def tune(model: str = "mlp", trials: int = 20, *, base: TrainConfig | None = None, space: dict | str | Path | None = None,
         timeout: float | None = None, storage: str | None = None, study: str | None = None, n_jobs: int = 1,
         pruner="median", seed: int | None = None, out: str | Path | None = None, dataset: Dataset | None = None,
         on_trial: TrialCallback | None = None) -> TuneResult:
    """Run (or resume) the study until it holds `trials` finished trials, then write its outputs.

    `base` is the config trials start from (default `base_config(model)`); `space` overrides the
    model's search space ({name: spec} or a TOML/JSON file). `timeout` stops starting trials after
    that many seconds; `n_jobs` runs trials in that many threads of this process (they share the
    cores; for more, start more processes on the same storage). `pruner` is "median", "hyperband",
    "none" or an Optuna pruner. Outputs go to `out` (default tunes/<study>): best.json, trials.csv
    and the figures. `on_trial` gets `trial_record(...)` of every trial this process finishes,
    with the running best.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and stale-trial cleanup are flagged experimental; their warning would be noise on every run
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    base = base or base_config(model)
    name = _study_name(study or base.model)
    folder = Path(out) if out is not None else Path("tunes") / name
    _check_settings(trials, timeout, n_jobs, base)
    overrides = read_space_file(space) if isinstance(space, (str, Path)) else space
    params = build_space(base.model, overrides)
    check_space(params, base)
    _make_folder(folder)
    url = storage or f"sqlite:///{folder / 'study.db'}"
    the_study = open_study(url, name, base.model, make_pruner(pruner, params, base), seed)
    dataset = dataset or load_dataset(base.dataset, val_size=base.val_size, split_seed=base.split_seed)
    objective = Objective(params, base, dataset)
    before = len(_trials(the_study, "finished"))
    report = _Reporter(the_study, folder, on_trial)
    try:
        _run_workers(the_study, objective, trials, timeout, n_jobs, report)
    except _storage_errors() as error:
        raise RunError(f"storage {_safe_url(url)} failed: {_first_line(error)}") from None
    except (KeyboardInterrupt, Interrupted):
        raise TuneInterrupted() from None
    return write_outputs(the_study, folder, new=len(_trials(the_study, "finished")) - before)


class TuneInterrupted(DigitlabError):
    """Tuning stopped by Ctrl-C: finished trials stay in the study and the same command resumes it."""

    exit_code = 130

    def __init__(self):
        super().__init__("interrupted; finished trials are kept in the study: run the same command to resume it")


def _check_settings(trials: int, timeout: float | None, n_jobs: int, base: TrainConfig) -> None:
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


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create study folder {folder}: {error.strerror}") from None


class Objective:
    """One trial: draw the parameters, train on the training split, return the final validation accuracy."""

    def __init__(self, space: dict[str, Param], base: TrainConfig, dataset: Dataset):
        self.space, self.base, self.dataset = space, base, dataset

    def __call__(self, trial) -> float:
        import optuna

        config = config_for({name: param.suggest(trial) for name, param in self.space.items()}, self.base)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("worker", WORKER)

        def on_epoch(record: dict) -> None:
            trial.report(record["val_accuracy"], record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

        run = train(config, dataset=self.dataset, on_epoch=on_epoch, save=False, test=False)
        return run.metrics["val_accuracy"]


def open_study(url: str, name: str, model: str, pruner=None, seed: int | None = None):
    """Create the study in the storage at `url`, or load it if it exists; one-line ConfigError if unreachable."""
    import optuna

    storage = open_storage(url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                    pruner=pruner)
        # seed + trials so far: a resumed seeded study must not replay its first random draws;
        # constant_liar: concurrent workers see running trials as bad, so they do not propose the same point
        study.sampler = optuna.samplers.TPESampler(seed=None if seed is None else seed + len(study.trials),
                                                   constant_liar=True)
        tuned = study.user_attrs.get("model")
        if tuned is None:
            study.set_user_attr("model", model)
    except _storage_errors() as error:
        raise ConfigError(f"cannot open study {name!r} in {_safe_url(url)}: {_first_line(error)}") from None
    if tuned not in (None, model):
        raise ConfigError(f"study {name!r} tunes model {tuned!r}, not {model!r}; choose another --study")
    return study


def open_storage(url: str):
    """An Optuna RDB storage with heartbeats (so a killed worker's trial is failed, not left running)."""
    import optuna

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # seconds to wait for a lock
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                                          grace_period=GRACE_SECONDS)
    except ImportError as error:
        missing = f" ({error.__cause__})" if error.__cause__ else ""
        hint = "; for PostgreSQL: pip install 'psycopg[binary]'" if url.startswith("postgresql://") else ""
        raise ConfigError(f"cannot open storage {_safe_url(url)}: its database driver is not installed{missing}{hint}") from None
    except _storage_errors() as error:
        hint = " (does its folder exist and is it writable?)" if url.startswith("sqlite") else ""
        raise ConfigError(f"cannot open storage {_safe_url(url)}: {_first_line(error)}{hint}") from None


def _storage_errors() -> tuple[type[Exception], ...]:
    from sqlalchemy.exc import SQLAlchemyError
    return (SQLAlchemyError, ValueError, KeyError)


def _first_line(error: Exception) -> str:
    return re.sub(r"^\(\w+(\.\w+)*\)\s*", "", str(error).strip().splitlines()[0]) if str(error).strip() else type(error).__name__


def _safe_url(url: str) -> str:
    """The URL with any password hidden, for messages and best.json."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can parse: there is no password to find in it either
        return url


def make_pruner(pruner, space: dict[str, Param], base: TrainConfig):
    """An Optuna pruner from its name; an Optuna pruner object passes through."""
    import optuna

    if not isinstance(pruner, str):
        return pruner
    if pruner == "median":  # after 5 complete trials: below the median of earlier trials at the same epoch
        return optuna.pruners.MedianPruner(n_startup_trials=5)
    if pruner == "hyperband":
        epochs = space.get("epochs")
        longest = base.epochs if epochs is None else max(epochs.candidates())
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(int(longest), 1), reduction_factor=3)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {pruner!r} (known: {', '.join(PRUNERS)})")


def _trials(study, which: str) -> list:
    from optuna.trial import TrialState

    states = {"finished": (TrialState.COMPLETE, TrialState.PRUNED),
              "claimed": (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)}[which]
    return study.get_trials(deepcopy=False, states=states)


def _run_workers(study, objective: Objective, trials: int, timeout: float | None, n_jobs: int, report) -> None:
    """Run trials in `n_jobs` threads until the study holds `trials` finished ones (or time runs out)."""
    import optuna

    deadline = None if timeout is None else time.monotonic() + timeout
    stop, errors = threading.Event(), []

    def work() -> None:
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                optuna.storages.fail_stale_trials(study)
                if len(_trials(study, "claimed")) >= trials:  # others' running trials will fill the budget
                    return
                study.optimize(objective, n_trials=1, callbacks=[report])
        except BaseException as error:  # noqa: BLE001 - handed to the main thread, which re-raises it
            stop.set()
            errors.append(error)

    helpers = [threading.Thread(target=work, daemon=True) for _ in range(n_jobs - 1)]
    for helper in helpers:
        helper.start()
    try:
        work()
        for helper in helpers:
            helper.join()
    finally:
        stop.set()
    if errors:
        raise errors[0]


class _Reporter:
    """Study callback: after each finished trial, refresh best.json and trials.csv and tell `on_trial`."""

    def __init__(self, study, folder: Path, on_trial: TrialCallback | None):
        self.study, self.folder, self.on_trial = study, folder, on_trial

    def __call__(self, study, frozen) -> None:
        trials = study.get_trials(deepcopy=False)
        write_tables(study, trials, self.folder)
        if self.on_trial is not None:
            record = trial_record(frozen)
            best = _best(trials)
            record["best_value"], record["best_trial"] = (best.value, best.number) if best else (None, None)
            self.on_trial(record)


def _best(trials):
    from optuna.trial import TrialState

    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    return max(complete, key=lambda trial: (trial.value, -trial.number)) if complete else None


def trial_record(trial) -> dict:
    """A finished trial as plain data: number, state, value (pruned: the last reported), epochs, params, seconds."""
    steps = dict(sorted(trial.intermediate_values.items()))
    value = trial.value if trial.value is not None else (list(steps.values())[-1] if steps else None)
    seconds = trial.duration.total_seconds() if trial.duration is not None else None
    return {"number": trial.number, "state": trial.state.name.lower(), "value": value, "epochs": len(steps),
            "seconds": seconds, "params": dict(trial.params), "curve": steps, "worker": trial.user_attrs.get("worker"),
            "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None}


def write_tables(study, trials: list, folder: Path) -> None:
    """best.json (the best trial's full config, loadable by TrainConfig.from_file) and trials.csv."""
    records = [trial_record(trial) for trial in trials]
    names = sorted({name for record in records for name in record["params"]})
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["number", "state", "val_accuracy", "epochs", "seconds", "started", "worker", *names])
    for record in records:
        writer.writerow([record["number"], record["state"], _cell(record["value"]), record["epochs"],
                         _cell(record["seconds"]), record["started"] or "", record["worker"] or "",
                         *(_cell(record["params"].get(name)) for name in names)])
    atomic_write(folder / TRIALS_FILE, lambda temp: Path(temp).write_text(table.getvalue()))
    best = _best(trials)
    if best is not None:
        config = {**best.user_attrs["config"], "out": None}
        finished = sum(record["state"] in ("complete", "pruned") for record in records)
        write_json(folder / BEST_FILE, {"config": config, "study": study.study_name, "trial": best.number,
                                        "val_accuracy": best.value, "params": best.params,
                                        "finished_trials": finished})


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_outputs(study, folder: Path, new: int = 0) -> TuneResult:
    """Write best.json, trials.csv and the figures for the study as it stands; return its summary."""
    from . import tuneviz

    trials = study.get_trials(deepcopy=False)
    write_tables(study, trials, folder)
    records = [trial_record(trial) for trial in trials]
    figures = {"history.png": tuneviz.optimization_history(records),
               "importances.png": tuneviz.param_importances(importances(study)),
               "parallel.png": tuneviz.parallel_coordinates(records, study_distributions(trials)),
               "curves.png": tuneviz.learning_curves(records)}
    for name, figure in figures.items():
        atomic_write(folder / name, lambda temp, figure=figure: figure.savefig(temp, format="png"))
    best = _best(trials)
    files = [folder / name for name in (TRIALS_FILE, *FIGURES)] + ([folder / BEST_FILE] if best else [])
    finished = [record for record in records if record["state"] in ("complete", "pruned")]
    return TuneResult(study.study_name, folder, len(finished), sum(r["state"] == "pruned" for r in finished), new,
                      best.value if best else None, best.number if best else None, dict(best.params) if best else {},
                      TrainConfig.from_dict({**best.user_attrs["config"], "out": None}) if best else None, files)


def importances(study) -> dict[str, float] | str:
    """Each searched parameter's share of the variation in validation accuracy (PED-ANOVA, Optuna's
    default, which needs no extra packages), or a sentence saying why it cannot be estimated yet."""
    import optuna

    complete = _trials(study, "finished")
    complete = [trial for trial in complete if trial.value is not None]
    if len(complete) < 3:
        return f"needs at least 3 complete trials (the study has {len(complete)})"
    try:
        return optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as error:
        return f"cannot be estimated: {_first_line(error)}"


def study_distributions(trials) -> dict:
    """Parameter name -> Optuna distribution (the last one seen), for scaling the plot axes."""
    distributions = {}
    for trial in trials:
        distributions.update(trial.distributions)
    return distributions

