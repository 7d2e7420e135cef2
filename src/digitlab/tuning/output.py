"""What a tuning study leaves in its folder: best.json, trials.csv and the figures, and a summary.

Every function reads the study as it stands in its storage, so any worker can write them; files are
written atomically, so workers that write at the same time leave one complete version. Trials
marked "surplus" (started after the budget was claimed; they trained nothing) are left out.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig
from ..files import atomic_write, write_json

BEST_FILE, TRIALS_FILE = "best.json", "trials.csv"
FIGURES = ("history.png", "importances.png", "parallel.png", "curves.png")


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


def best_trial(trials):
    """The complete trial with the highest validation accuracy (the earliest on a tie), or None."""
    from optuna.trial import TrialState

    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    return max(complete, key=lambda trial: (trial.value, -trial.number)) if complete else None


def trial_record(trial) -> dict:
    """A finished trial as plain data: number, state, value (pruned: the last reported), epochs, params, seconds."""
    steps = dict(sorted(trial.intermediate_values.items()))
    value = trial.value if trial.value is not None else (list(steps.values())[-1] if steps else None)
    seconds = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": value,
        "epochs": len(steps),
        "seconds": seconds,
        "params": dict(trial.params),
        "curve": steps,
        "worker": trial.user_attrs.get("worker"),
        "diverged": trial.user_attrs.get("diverged"),
        "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
    }


def listed(trials: list) -> list:
    return [trial for trial in trials if not trial.user_attrs.get("surplus")]


def write_tables(study, trials: list, folder: Path) -> None:
    """best.json (the best trial's full config, loadable by TrainConfig.from_file) and trials.csv."""
    records = [trial_record(trial) for trial in listed(trials)]
    names = sorted({name for record in records for name in record["params"]})
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["number", "state", "val_accuracy", "epochs_run", "seconds", "started", "worker", *names])
    for record in records:
        writer.writerow(
            [
                record["number"],
                record["state"],
                _cell(record["value"]),
                record["epochs"],
                _cell(record["seconds"]),
                record["started"] or "",
                record["worker"] or "",
                *(_cell(record["params"].get(name)) for name in names),
            ]
        )
    atomic_write(folder / TRIALS_FILE, lambda temp: Path(temp).write_text(table.getvalue()))
    best = best_trial(trials)
    if best is not None:
        config = {**best.user_attrs["config"], "out": None}
        finished = sum(record["state"] in ("complete", "pruned") for record in records)
        write_json(
            folder / BEST_FILE,
            {
                "config": config,
                "study": study.study_name,
                "trial": best.number,
                "val_accuracy": best.value,
                "params": best.params,
                "finished_trials": finished,
            },
        )


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_outputs(study, folder: Path, new: int = 0) -> TuneResult:
    """Write best.json, trials.csv and the figures for the study as it stands; return its summary."""
    from ..figures import tuning as tuneviz

    trials = listed(study.get_trials(deepcopy=False))
    write_tables(study, trials, folder)
    records = [trial_record(trial) for trial in trials]
    figures = {
        "history.png": tuneviz.optimization_history(records),
        "importances.png": tuneviz.param_importances(importances(study)),
        "parallel.png": tuneviz.parallel_coordinates(records, study_distributions(trials)),
        "curves.png": tuneviz.learning_curves(records),
    }
    for name, figure in figures.items():
        atomic_write(folder / name, functools.partial(figure.savefig, format="png"))
    best = best_trial(trials)
    files = [folder / name for name in (TRIALS_FILE, *FIGURES)] + ([folder / BEST_FILE] if best else [])
    finished = [record for record in records if record["state"] in ("complete", "pruned")]
    return TuneResult(
        study.study_name,
        folder,
        len(finished),
        sum(r["state"] == "pruned" for r in finished),
        new,
        best.value if best else None,
        best.number if best else None,
        dict(best.params) if best else {},
        TrainConfig.from_dict({**best.user_attrs["config"], "out": None}) if best else None,
        files,
    )


def importances(study) -> dict[str, float] | str:
    """Each searched parameter's importance, normalised to sum to 1, or a sentence saying why it cannot
    be estimated yet. PED-ANOVA (Optuna's default evaluator, needing no extra packages) scores how far
    the parameter's distribution among the top 10% of complete trials departs from that among all."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return f"needs at least 3 complete trials (the study has {len(complete)})"
    try:
        return optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as error:
        return f"cannot be estimated: {str(error).strip().splitlines()[0]}"


def study_distributions(trials) -> dict:
    """Parameter name -> Optuna distribution (the last one seen), for scaling the plot axes."""
    distributions = {}
    for trial in trials:
        distributions.update(trial.distributions)
    return distributions
