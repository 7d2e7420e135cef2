"""The Optuna study behind `digitlab.tune`: its storage, its pruner, and counts of its trials.

A study lives in an RDB storage (SQLite by default, PostgreSQL for several machines) with
heartbeats, so a worker that dies has its running trial failed after GRACE_SECONDS. Storage errors
become one-line ConfigErrors with any password hidden from the URL.
"""

from __future__ import annotations

import re
import time
import warnings

from .config import TrainConfig
from .errors import ConfigError
from .tunespace import Param

PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_SECONDS = 10  # a worker that dies has its running trial failed after the grace period
GRACE_SECONDS = 60


def claimed_before(study, number: int | None) -> int:
    """Finished trials, plus running trials numbered below `number` (every trial, if `number` is None)."""
    from optuna.trial import TrialState

    return sum(
        1
        for trial in study_trials(study, "claimed")
        if trial.state != TrialState.RUNNING or number is None or trial.number < number
    )


def open_study(url: str, name: str, model: str, pruner=None, seed: int | None = None):
    """Create the study in the storage at `url`, or load it if it exists; one-line ConfigError if unreachable."""
    import optuna

    storage = open_storage(url)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize", load_if_exists=True, pruner=pruner
        )
        # seed + trials so far: a resumed seeded study must not replay its first random draws;
        # constant_liar: concurrent workers see running trials as bad, so they do not propose the same point
        study.sampler = optuna.samplers.TPESampler(
            seed=None if seed is None else seed + len(study.trials), constant_liar=True
        )
        tuned = study.user_attrs.get("model")
        if tuned is None:
            study.set_user_attr("model", model)
    except storage_errors() as error:
        raise ConfigError(f"cannot open study {name!r} in {safe_url(url)}: {first_line(error)}") from None
    if tuned not in (None, model):
        raise ConfigError(f"study {name!r} tunes model {tuned!r}, not {model!r}; choose another --study")
    return study


def open_storage(url: str):
    """An Optuna RDB storage with heartbeats (so a killed worker's trial is failed, not left running)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # digitlab prints its own line per trial
    # heartbeats and stale-trial cleanup are flagged experimental; their warning would be noise on every run
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # seconds to wait for a lock
    try:
        for attempt in range(1, 6):
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
                )
            except (IntegrityError, OperationalError) as error:
                # another worker is creating the same new database's tables: wait, then use them
                racing = isinstance(error, IntegrityError) or "already exists" in str(error)
                if not racing or attempt == 5:
                    raise
                time.sleep(0.2 * attempt)
    except ImportError as error:
        missing = f" ({error.__cause__})" if error.__cause__ else ""
        hint = "; for PostgreSQL: pip install 'psycopg[binary]'" if url.startswith("postgresql://") else ""
        raise ConfigError(
            f"cannot open storage {safe_url(url)}: its database driver is not installed{missing}{hint}"
        ) from None
    except storage_errors() as error:
        hint = " (does its folder exist and is it writable?)" if url.startswith("sqlite") else ""
        raise ConfigError(f"cannot open storage {safe_url(url)}: {first_line(error)}{hint}") from None


def storage_errors() -> tuple[type[Exception], ...]:
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, ValueError, KeyError)


def first_line(error: Exception) -> str:
    """The first line of a database error, without SQLAlchemy's "(module.ErrorClass) " prefix."""
    text = str(error).strip()
    return re.sub(r"^\(\w+(\.\w+)*\)\s*", "", text.splitlines()[0]) if text else type(error).__name__


def safe_url(url: str) -> str:
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


def study_trials(study, which: str) -> list:
    from optuna.trial import TrialState

    states = {
        "finished": (TrialState.COMPLETE, TrialState.PRUNED),
        "claimed": (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING),
    }[which]
    return study.get_trials(deepcopy=False, states=states)
