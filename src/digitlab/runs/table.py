"""The runs in a folder as rows of a table, read from their config.json and metrics.json alone.

A run folder is any folder under the one given whose config.json was written by `train` (it holds
the resolved config and the versions); one whose metrics.json is missing is a run that never
finished (it crashed, or is still training) and shows no accuracies.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from ..errors import ConfigError, RunError
from ..files import read_json
from .run import CONFIG_FILE, METRICS_FILE

# Table columns: (heading, key of the row, width). Sorting by a heading sorts by its key.
COLUMNS = (
    ("name", "name", 0),
    ("model", "model", 8),
    ("recipe", "recipe", 6),
    ("dataset", "dataset", 13),
    ("epochs", "epochs", 6),
    ("val", "val_accuracy", 7),
    ("test", "test_accuracy", 7),
    ("seconds", "train_seconds", 8),
    ("date", "date", 16),
)
SORT_KEYS = tuple(heading for heading, _, _ in COLUMNS)
BEST_FIRST = ("val_accuracy", "test_accuracy")  # sorted high to low; everything else low to high
SKIPPED = ("mlruns", "mlartifacts")  # MLflow's local stores keep copies of runs' files as artefacts


def read_row(folder: Path, root: Path | None = None) -> dict:
    """One run's row: name (its path under `root`), model, recipe, dataset, epochs done, validation and
    test accuracy, seconds of training, date (when its files were last written), finished."""
    saved = read_json(folder / CONFIG_FILE)
    config = saved.get("config", {})
    finished = (folder / METRICS_FILE).is_file()
    metrics = read_json(folder / METRICS_FILE) if finished else {}
    written = (folder / (METRICS_FILE if finished else CONFIG_FILE)).stat().st_mtime
    return {
        "name": str(folder.relative_to(root)) if root and folder != root else folder.name,
        "path": str(folder),
        "model": config.get("model"),
        "recipe": config.get("recipe"),
        "dataset": saved.get("dataset", {}).get("name", config.get("dataset")),
        "epochs": metrics.get("epoch", len(metrics.get("history", []))) if finished else None,
        "val_accuracy": metrics.get("val_accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "train_seconds": metrics.get("train_seconds"),
        "date": datetime.datetime.fromtimestamp(written).isoformat(timespec="seconds"),
        "finished": finished,
    }


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` holds a config.json written by `train` (a config and the versions that made it)."""
    try:
        saved = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(saved, dict) and isinstance(saved.get("config"), dict) and "versions" in saved


def list_runs(folder: str | Path = "runs", sort: str = "date") -> list[dict]:
    """Every run folder under `folder` (at any depth) as a row (see read_row), sorted by a column
    heading of the table (`SORT_KEYS`): accuracies best first, the rest in ascending order."""
    root = Path(folder)
    if not root.is_dir():
        raise RunError(f"no folder of runs at {root}")
    if sort not in SORT_KEYS:
        raise ConfigError(f"cannot sort by {sort!r} (columns: {', '.join(SORT_KEYS)})")
    folders = sorted(
        {
            path.parent
            for path in root.rglob(CONFIG_FILE)
            if not _skipped(path.parent.relative_to(root)) and is_run_folder(path.parent)
        }
    )
    rows = [read_row(path, root) for path in folders]
    key = dict((heading, name) for heading, name, _ in COLUMNS)[sort]
    missing = [row for row in rows if row[key] is None]
    present = sorted((row for row in rows if row[key] is not None), key=lambda row: row[key])
    if key in BEST_FIRST:
        present.reverse()
    return present + missing


def _skipped(relative: Path) -> bool:
    return any(part in SKIPPED or part.startswith(".") for part in relative.parts)


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table, one line per run (accuracies in %, seconds to 0.1)."""
    width = max([len("name"), *(len(row["name"]) for row in rows)])
    widths = {heading: size or width for heading, _, size in COLUMNS}
    lines = ["  ".join(f"{heading:<{widths[heading]}}" for heading, _, _ in COLUMNS).rstrip()]
    for row in rows:
        cells = [f"{cell_text(key, row[key]):<{widths[heading]}}" for heading, key, _ in COLUMNS]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def cell_text(key: str, value) -> str:
    """A row's value as the table shows it."""
    if value is None:
        return "-"
    if key.endswith("accuracy"):
        return f"{value:.2%}"
    if key == "train_seconds":
        return f"{value:.1f}"
    if key == "date":
        return value.replace("T", " ")[:16]
    return str(value)
