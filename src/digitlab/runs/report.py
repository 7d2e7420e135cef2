"""The visual report of a run: RUN/report/index.html and the PNGs it shows.

`write_report` predicts the test set once, draws every figure of `digitlab.figures.predictions` from those
predictions, saves each PNG and the HTML page atomically (temp file, then rename), and stores the
expected calibration error in the run's metrics.json as `ece`.
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image

from ..data.datasets import Dataset
from ..errors import ConfigError, RunError
from ..figures import predictions as viz
from ..files import atomic_write, make_folder, read_json, write_json
from ..inference.evaluate import calibration, classification_metrics, most_confused_pairs, predict_logits
from .run import METRICS_FILE, Run, load_run

CALIBRATION_BINS = 15
REPORT_FOLDER, INDEX_FILE = "report", "index.html"


@dataclass
class Section:
    """One part of the page: its heading, figures (file name -> Figure or None) and extra HTML."""

    title: str
    figures: dict[str, Figure | None] = field(default_factory=dict)
    html: str = ""
    note: str = ""  # shown when a figure is None (nothing to draw for this model)


def write_report(
    run: Run | str | Path,
    digit: int = 7,
    seed: int = 0,
    out: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Write the report of a run (a Run or a run folder) and return the path of its index.html.

    `digit` picks the class shown in "examples of one digit"; `seed` draws the random sample of
    test digits. The report goes to `out`, by default RUN/report. When the run has a folder, its
    metrics.json gains `ece` (15 equal-width bins over the max probability). A run folder is loaded onto `device`.
    """
    run = run if isinstance(run, Run) else load_run(run, device)
    if out is not None:
        folder = Path(out)
    elif run.path is not None:
        folder = run.path / REPORT_FOLDER
    else:
        raise RunError("this run has no folder; pass out= to say where the report goes")
    if not 0 <= digit < len(run.classes):
        raise ConfigError(f"digit must be a class index from 0 to {len(run.classes) - 1}, got {digit}")
    data = run.data("reported on")
    logits = predict_logits(run.model, data.test.images)
    probabilities = logits.softmax(1)
    metrics = classification_metrics(logits, data.test.labels, data.classes)
    ece = calibration(probabilities, data.test.labels, CALIBRATION_BINS)["ece"]
    sections = build_sections(run, data, probabilities, metrics, ece, digit, seed)
    make_folder(folder, "report folder")
    sizes = {}  # file name -> (width, height) in pixels, as saved
    for section in sections:
        for name, figure in section.figures.items():
            if figure is not None:
                atomic_write(folder / name, functools.partial(figure.savefig, format="png"))
                with Image.open(folder / name) as image:
                    sizes[name] = image.size
    index = folder / INDEX_FILE
    page = render_html(run, metrics, ece, sections, sizes)
    atomic_write(index, lambda temp: Path(temp).write_text(page, encoding="utf-8"))
    run.metrics["ece"] = ece
    if run.path is not None and (run.path / METRICS_FILE).exists():
        write_json(run.path / METRICS_FILE, {**read_json(run.path / METRICS_FILE), "ece": ece})
    return index


def build_sections(
    run: Run, data: Dataset, probabilities: torch.Tensor, metrics: dict, ece: float, digit: int, seed: int
) -> list[Section]:
    """Every figure of the report, grouped as the page shows them."""
    classes, test = data.classes, data.test
    images, labels = test.images, test.labels
    history = run.metrics.get("history") or []
    chosen = first_of_each_class(labels, len(classes))
    confusion = torch.tensor(metrics["confusion_matrix"])
    model_name = type(run.model).__name__
    return [
        Section(
            "Data",
            {
                "training_digits.png": viz.training_digits(data.train.images, data.train.labels, classes),
                f"examples_of_{digit}.png": viz.digit_examples(data.train.images, data.train.labels, digit, classes),
                "class_distribution.png": viz.class_distribution(
                    {name: split.labels for name, split in data.splits().items() if len(split)}, classes
                ),
            },
        ),
        Section(
            "Training",
            {"training_curves.png": viz.training_curves(history) if history else None},
            note="this run carries no training history (a bare model file)",
        ),
        Section(
            "Prediction confidence on the test set",
            {
                "confidently_wrong.png": viz.confidently_wrong(images, labels, probabilities, classes),
                "uncertain.png": viz.uncertain(images, labels, probabilities, classes),
                "misclassified.png": viz.misclassified_overview(images, labels, probabilities, classes),
                "random_sample.png": viz.random_sample(images, labels, probabilities, classes, seed=seed),
            },
        ),
        Section(
            "Confusion matrix",
            {"confusion_matrix.png": viz.confusion_matrix(confusion, classes)},
            html=per_class_table(metrics),
        ),
        Section(
            "Calibration",
            {"reliability.png": viz.reliability_diagram(probabilities, labels, CALIBRATION_BINS)},
            html=f"<p>Expected calibration error ({CALIBRATION_BINS} equal-width bins of the max probability): "
            f"<strong>{ece:.2%}</strong>.</p>",
        ),
        Section(
            "Inside the model",
            {
                "first_layer.png": viz.first_layer(run.model),
                "activations.png": viz.activations(run.model, images[chosen], labels[chosen], classes),
            },
            note=f"digitlab has no picture of the inside of a {model_name} yet",
        ),
        Section(
            "Why the model decides",
            {
                "saliency.png": viz.saliency_grid(run.model, images, labels, probabilities, classes),
                "filter_digits.png": viz.filter_digits(run.model, data.train.images),
            },
            html="<p>Saliency is integrated gradients from a black image: each pixel's share of the chosen "
            "class's logit, red towards it, blue away from it; the shares sum to the logit's rise from a blank "
            "page.</p>",
            note="the training digits that excite each filter are drawn for convolutional models",
        ),
        Section(
            "Most-confused pairs",
            {"confused_pairs.png": viz.confused_pairs(images, labels, probabilities, classes)},
            html=confused_pairs_table(confusion, classes),
        ),
    ]


def first_of_each_class(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Index of the first example of each class that occurs, in class order."""
    return torch.tensor(
        [int(found[0]) for found in ((labels == cls).nonzero().squeeze(1) for cls in range(classes)) if len(found)],
        dtype=torch.long,
    )


def per_class_table(metrics: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(row['class'])}</td><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td>"
        f"<td>{row['f1']:.4f}</td><td>{row['support']:,}</td></tr>"
        for row in metrics["per_class"]
    )
    return (
        "<table><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
        f"</thead><tbody>{rows}</tbody><tfoot><tr><td>macro F1</td><td></td><td></td>"
        f"<td>{metrics['macro_f1']:.4f}</td><td>{metrics['count']:,}</td></tr></tfoot></table>"
    )


def confused_pairs_table(confusion: torch.Tensor, classes: tuple[str, ...]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(classes[true])}</td><td>{html.escape(classes[guess])}</td><td>{count}</td></tr>"
        for true, guess, count in most_confused_pairs(confusion)
    )
    return (
        (f"<table><thead><tr><th>true</th><th>predicted</th><th>count</th></tr></thead><tbody>{rows}</tbody></table>")
        if rows
        else "<p>No digit is misclassified.</p>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1600px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.summary { color: #555; } figure { margin: 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; } img { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 1em 0; } th, td { padding: 0.25em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; } thead th { border-bottom: 2px solid #999; }
tbody tr:nth-child(even) { background: #f4f4f4; } tfoot td { border-top: 1px solid #999; font-weight: bold; }
.note { color: #777; font-style: italic; }
"""


def render_html(run: Run, metrics: dict, ece: float, sections: list[Section], sizes: dict[str, tuple[int, int]]) -> str:
    """The page: a summary line, then each section's figures (img tags sized by `sizes`) and extra HTML."""
    spec = getattr(run.model, "spec", {"name": type(run.model).__name__, "kwargs": {}})
    name = run.path.name if run.path is not None else spec["name"]
    summary = (
        f"{html.escape(spec['name'])} {html.escape(str(spec['kwargs'] or ''))} on {html.escape(run.dataset)} — "
        f"test accuracy {metrics['accuracy']:.2%}, macro F1 {metrics['macro_f1']:.4f}, ECE {ece:.2%}, "
        f"{metrics['count']:,} test images"
    )
    body = [f"<h1>digitlab report: {html.escape(name)}</h1>", f'<p class="summary">{summary}</p>']
    for section in sections:
        body.append(f'<h2>{html.escape(section.title)}</h2>\n<div class="figures">')
        for file, figure in section.figures.items():
            if figure is None:
                body.append(f'<p class="note">{html.escape(section.note)}.</p>')
                continue
            width, height = sizes[file]
            title = figure.get_suptitle() or file
            body.append(
                f'<figure><img src="{html.escape(file)}" width="{width}" height="{height}" '
                f'alt="{html.escape(title)}"></figure>'
            )
        body.append(f"{section.html}</div>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>digitlab report: {html.escape(name)}</title><link rel="icon" href="data:,">'
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
