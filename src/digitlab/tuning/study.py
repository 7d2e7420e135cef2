"""The Optuna study behind `digitlab.tune`: its storage, its pruner, and counts of its trials.

A study lives in an RDB storage (SQLite by default, PostgreSQL for several machines) with
heartbeats: a worker that dies (even by SIGKILL) stops beating, and the next worker that looks
fails its running trial `grace` seconds (default GRACE_SECONDS) after the last beat and queues a
retry of the same parameters, which the next free worker runs. Storage errors become one-line
ConfigErrors with any password hidden from the URL.
"""

from __future__ import annotations

import re
import time
import warnings

from ..config import TrainConfig
from ..errors import ConfigError
from .space import Param

PRUNERS = ("median", "hyperband", "none")
GRACE_SECONDS = 60  # a dead worker's running trial is failed and retried this long after its last heartbeat
HEARTBEATS_PER_GRACE = 6  # a live worker beats every grace / 6 s (10 s by default), so it is never taken for dead
MAX_RETRIES = 2  # a trial whose workers die this many times in a row is left failed


def claimed_before(study, number: int | None) -> int:
    """Finished trials, plus running trials numbered below `number` (every trial, if `number` is None)."""
    from optuna.trial import TrialState

    return sum(
        1
        for trial in study_trials(study, "claimed")
        if trial.state != TrialState.RUNNING or number is None or trial.number < number
    )


def first_heartbeat(trial) -> None:
    """Record the trial's first heartbeat now, before its work starts.

    Optuna's heartbeat thread beats on its own schedule, and a trial with no heartbeat at all is never
    taken for stale: a worker killed in that first instant (likelier on a busy machine) would leave its
    trial running for ever and the other workers waiting for it.
    """
    storage = trial.study._storage
    if storage.get_heartbeat_interval() is not None:
        storage.record_heartbeat(trial._trial_id)


def open_study(url: str, name: str, model: str, pruner=None, seed: int | None = None, grace: int = GRACE_SECONDS):
    """Create the study in the storage at `url`, or load it if it exists; one-line ConfigError if unreachable.

    `grace`: seconds after a dead worker's last heartbeat before its running trial is failed and retried.
    """
    import optuna

    storage = open_storage(url, grace)
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


def open_storage(url: str, grace: int = GRACE_SECONDS):
    """An Optuna RDB storage with heartbeats: a killed worker's trial is failed after `grace` seconds
    (not left running for ever) and retried with the same parameters, up to MAX_RETRIES times."""
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
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=max(1, grace // HEARTBEATS_PER_GRACE),
                    grace_period=grace,
                    **_retry_on_stale_heartbeat(),
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


def _retry_on_stale_heartbeat() -> dict:
    """The storage argument that retries a trial failed for a stale heartbeat (Optuna renamed it in 4.9)."""
    from optuna import storages

    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)}
    return {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)}


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
