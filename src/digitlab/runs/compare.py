"""Comparing trained runs: where their configs differ, their training curves on the same axes,
per-class test accuracy side by side, and the test digits one run gets right and another wrong.

`compare` writes all of it as one self-contained HTML page (the pictures inline) and returns a
`Comparison` whose `table()` says it in text. Runs of different datasets are compared where that
means something: configs and curves across all of them, classes and digits only within a dataset.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..data.datasets import load_dataset
from ..errors import ConfigError
from ..figures.style import RIGHT, WRONG, digit_grid, new_figure, styled
from ..files import atomic_write, make_folder
from ..images.preprocess import deskew
from ..inference.evaluate import predict_logits
from .run import Run, load_run
from .table import COLUMNS, cell_text, format_table, read_row

MAX_PAIRS_RUNS = 4  # up to this many runs of a dataset, every pair is compared; beyond, each with the first
EXAMPLES = 15  # digits shown per direction of a pair


@dataclass
class Disagreement:
    """Test digits `right` gets right and `wrong` gets wrong (indices into the dataset's test split)."""

    dataset: str
    right: str
    wrong: str
    index: list[int]


@dataclass
class Comparison:
    """What `compare` found; `path` is the HTML page (None when not written)."""

    rows: list[dict]
    differences: dict[str, list]  # config field -> its value in each run, for fields that differ
    per_class: dict[str, dict]  # dataset -> {"classes": [...], "runs": {name: [accuracy per class]}}
    disagreements: list[Disagreement]
    notes: list[str] = field(default_factory=list)
    path: Path | None = None
    body: str = field(default="", repr=False)  # the page's content, its pictures inline

    def table(self) -> str:
        """The comparison as text: the runs, the settings that differ, per-class accuracy, disagreements."""
        names = [row["name"] for row in self.rows]
        parts = [*self.notes, format_table(self.rows)]
        if self.differences:
            cells = [["setting", *names]] + [[key, *map(str, values)] for key, values in self.differences.items()]
            widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
            lines = ["  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)) for row in cells]
            parts.append("config differences\n" + "\n".join(line.rstrip() for line in lines))
        else:
            parts.append("configs: identical")
        for dataset, scores in self.per_class.items():
            header = f"{'class':<12}" + "".join(f"  {name[-12:]:>12}" for name in scores["runs"])
            lines = [
                f"{label:<12}" + "".join(f"  {values[index]:>12.2%}" for values in scores["runs"].values())
                for index, label in enumerate(scores["classes"])
            ]
            parts.append(f"per-class test accuracy ({dataset})\n" + "\n".join([header, *lines]))
        parts.extend(
            f"{len(item.index):,} test digits {item.right} gets right and {item.wrong} gets wrong"
            for item in self.disagreements
        )
        return "\n\n".join(parts)

    def _repr_html_(self) -> str:
        """What Jupyter shows: the page's content, without the page's own styles (they would restyle the notebook)."""
        return f"<div>{self.body}</div>" if self.body else f"<pre>{html.escape(self.table())}</pre>"


def compare(runs, out: str | Path | None = None, write: bool = True) -> Comparison:
    """Compare two or more runs (Run objects or run folders) and return the Comparison; unless
    write=False, the HTML page goes to `out` (default comparisons/<first>-vs-<second>-<time>.html)."""
    loaded = [run if isinstance(run, Run) else load_run(run) for run in runs]
    if len(loaded) < 2:
        raise ConfigError("compare needs at least two runs")
    names = _unique_names(loaded)
    rows = [
        {**read_row(run.path), "name": name} if run.path else _row_of(run, name)
        for run, name in zip(loaded, names, strict=True)
    ]
    by_dataset: dict[str, list[int]] = {}
    for position, run in enumerate(loaded):
        by_dataset.setdefault(run.dataset, []).append(position)
    notes = []
    if len(by_dataset) > 1:
        groups = "; ".join(f"{', '.join(names[i] for i in members)} on {name}" for name, members in by_dataset.items())
        notes.append(
            f"these runs are on different datasets ({groups}): configs and curves are compared across all, "
            "per-class accuracy and test digits only within a dataset"
        )
    per_class, disagreements, pictures = {}, [], []
    for dataset, members in by_dataset.items():
        group = [loaded[i] for i in members]
        per_class[dataset] = _per_class(group, [names[i] for i in members])
        found, figures = _disagreements(dataset, group, [names[i] for i in members])
        disagreements += found
        pictures += figures
    comparison = Comparison(rows, config_differences(loaded), per_class, disagreements, notes)
    comparison.body = render_body(comparison, _curves(loaded, names), pictures)
    if write:
        comparison.path = _write_page(comparison, names, out)
    return comparison


def _unique_names(runs: list[Run]) -> list[str]:
    names = [run.path.name if run.path else f"run {index + 1}" for index, run in enumerate(runs)]
    return [name if names.count(name) == 1 else f"{name} ({index + 1})" for index, name in enumerate(names)]


def _row_of(run: Run, name: str) -> dict:
    metrics = run.metrics
    return {
        "name": name,
        "path": None,
        "model": run.config.model,
        "recipe": run.config.recipe,
        "dataset": run.dataset,
        "epochs": metrics.get("epoch"),
        "val_accuracy": metrics.get("val_accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "train_seconds": metrics.get("train_seconds"),
        "date": None,
        "finished": True,
    }


def config_differences(runs: list[Run]) -> dict[str, list]:
    """Each config setting whose value is not the same in every run, with its value per run (where a
    run was saved and what it was logged to do not change what it learns, so they do not count)."""
    configs = [run.config.to_dict() for run in runs]
    keys = [key for key in configs[0] if key not in ("out", "log")]
    return {key: [config[key] for config in configs] for key in keys if any(c[key] != configs[0][key] for c in configs)}


def _per_class(runs: list[Run], names: list[str]) -> dict:
    """Test accuracy per class (the recall of each class) from each run's metrics."""
    classes = list(runs[0].classes)
    scores = {}
    for run, name in zip(runs, names, strict=True):
        report = run.metrics.get("test") or {}
        scores[name] = [row["recall"] for row in report.get("per_class", [])] or [float("nan")] * len(classes)
    return {"classes": classes, "runs": scores}


def _disagreements(dataset: str, runs: list[Run], names: list[str]) -> tuple[list[Disagreement], list]:
    """For each pair of runs, the test digits one gets right and the other wrong, and a figure of each."""
    if len(runs) < 2:
        return [], []
    reference = runs[0]
    test = load_dataset(dataset, val_size=reference.config.val_size, split_seed=reference.config.split_seed).test
    predicted = [
        predict_logits(run.model, test.images, transform=deskew if run.preprocess.deskew else None).argmax(1).cpu()
        for run in runs
    ]
    right = [guesses == test.labels for guesses in predicted]
    pairs = [(i, j) for i in range(len(runs)) for j in range(len(runs)) if i != j]
    if len(runs) > MAX_PAIRS_RUNS:
        pairs = [(i, j) for i, j in pairs if 0 in (i, j)]
    found, figures = [], []
    for i, j in pairs:
        index = torch.nonzero(right[i] & ~right[j]).flatten()
        found.append(Disagreement(dataset, names[i], names[j], index.tolist()))
        shown = index[:EXAMPLES]
        titles = [
            f"true {reference.classes[t]}\n{reference.classes[a]} · {reference.classes[b]}"
            for t, a, b in zip(
                test.labels[shown].tolist(), predicted[i][shown].tolist(), predicted[j][shown].tolist(), strict=True
            )
        ]
        caption = f"{len(index):,} digits {names[i]} gets right, {names[j]} wrong"
        title = f"The first {len(shown)}, each with its true class and the answers of {names[i]} · {names[j]}"
        figures.append((caption, digit_grid(test.images[shown], titles, title, [RIGHT] * len(shown))))
    return found, figures


@styled
def _curves(runs: list[Run], names: list[str]) -> Figure:
    """Validation accuracy and training loss per epoch, one colour per run."""
    figure = new_figure(10, 4)
    figure.suptitle("Training curves")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for run, name in zip(runs, names, strict=True):
        history = run.metrics.get("history", [])
        epochs = [record["epoch"] for record in history]
        line = loss_axes.plot(epochs, [record["train_loss"] for record in history], marker="o", markersize=3)
        values = [record.get("val_accuracy") for record in history]
        if history and all(value is not None for value in values):
            accuracy_axes.plot(epochs, values, marker="o", markersize=3, color=line[0].get_color(), label=name)
        else:
            accuracy_axes.plot([], [], color=line[0].get_color(), label=f"{name} (no validation)")
    for axes, title in ((accuracy_axes, "Validation accuracy"), (loss_axes, "Training loss")):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracy_axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    accuracy_axes.legend(fontsize=8)
    return figure


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _write_page(comparison: Comparison, names: list[str], out) -> Path:
    path = (
        Path(out) if out else Path("comparisons") / f"{'-vs-'.join(names)[:120]}-{time.strftime('%Y%m%d-%H%M%S')}.html"
    )
    make_folder(path.parent, "comparison folder")
    page = render_page(comparison)
    atomic_write(path, lambda temp: Path(temp).write_text(page, encoding="utf-8"))
    return path


def render_page(comparison: Comparison) -> str:
    """The comparison as one HTML page with its pictures inline (no scripts, nothing fetched)."""
    names = ", ".join(row["name"] for row in comparison.rows)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>digitlab: {html.escape(names)}</title><style>{STYLE}</style></head>"
        f"<body><h1>Comparing {html.escape(names)}</h1>\n{comparison.body}\n</body></html>\n"
    )


def render_body(comparison: Comparison, curves: Figure, pictures: list[tuple[str, Figure]]) -> str:
    """The page's content: notes, the runs, config differences, curves, per-class accuracy, digits."""
    escape = html.escape
    names = [row["name"] for row in comparison.rows]
    parts = [
        f'<p style="border-left:4px solid {WRONG};padding-left:0.6em">{escape(note)}</p>' for note in comparison.notes
    ]
    parts.append("<h2>Runs</h2>" + _html_table(_run_cells(comparison.rows)))
    differences = [[key, *map(str, values)] for key, values in comparison.differences.items()]
    parts.append(
        "<h2>Config differences</h2>"
        + (_html_table([["setting", *names], *differences]) if differences else "<p>The configs are identical.</p>")
    )
    parts.append("<h2>Training curves</h2>" + _png(curves))
    for dataset, scores in comparison.per_class.items():
        rows = [["class", *scores["runs"]]]
        rows += [
            [label, *(f"{values[index]:.2%}" for values in scores["runs"].values())]
            for index, label in enumerate(scores["classes"])
        ]
        parts.append(f"<h2>Per-class test accuracy ({escape(dataset)})</h2>" + _html_table(rows))
    parts.append("<h2>Test digits one run gets right and another wrong</h2>")
    parts.extend(f"<h3>{escape(caption)}</h3>{_png(figure)}" for caption, figure in pictures)
    return "\n".join(parts)


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
)


def _run_cells(rows: list[dict]) -> list[list[str]]:
    return [[heading for heading, _, _ in COLUMNS]] + [
        [cell_text(key, row[key]) for _, key, _ in COLUMNS] for row in rows
    ]


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"
