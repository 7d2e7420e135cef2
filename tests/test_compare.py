"""Listing runs and comparing them, on tiny real runs (2,000 training images, one epoch, the seed MLP),
and how a Run and a figure show in Jupyter."""

from __future__ import annotations

import base64
import html
import json
import re

import pytest

import digitlab
from conftest import require
from digitlab import ConfigError, RunError, TrainConfig
from digitlab.cli import main
from digitlab.inference.evaluate import predict_logits


@pytest.fixture(scope="module")
def runs_folder(mnist, tmp_path_factory):
    require("fashion")
    """Three finished runs (two MLPs on MNIST that differ in learning rate and hidden widths, one on
    Fashion-MNIST) and one that never finished, in one folder."""
    root = tmp_path_factory.mktemp("runs")
    tiny = {"epochs": 1, "train_size": 2000}
    digitlab.train(TrainConfig(lr=5e-3, out=str(root / "fast"), **tiny), dataset=mnist)
    digitlab.train(TrainConfig(lr=1e-3, model_kwargs={"hidden": [16]}, out=str(root / "slow"), **tiny), dataset=mnist)
    digitlab.train(TrainConfig(dataset="fashion-mnist", lr=5e-3, out=str(root / "nested" / "fashion"), **tiny))
    (root / "crashed").mkdir()
    config = {"config": TrainConfig(out=str(root / "crashed")).to_dict(), "versions": {}, "dataset": {"name": "mnist"}}
    (root / "crashed" / "config.json").write_text(json.dumps(config))
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "config.json").write_text('{"lr": 1}')
    return root


def test_list_runs_reads_every_run_folder(runs_folder):
    rows = {row["name"]: row for row in digitlab.list_runs(runs_folder)}
    assert set(rows) == {"fast", "slow", "nested/fashion", "crashed"}
    fast = digitlab.load_run(runs_folder / "fast").metrics
    assert rows["fast"]["test_accuracy"] == fast["test_accuracy"]
    assert rows["fast"]["val_accuracy"] == fast["val_accuracy"]
    assert rows["fast"]["train_seconds"] == fast["train_seconds"]
    assert (rows["fast"]["model"], rows["fast"]["epochs"], rows["fast"]["dataset"]) == ("mlp", 1, "mnist")
    assert rows["nested/fashion"]["dataset"] == "fashion-mnist"
    assert rows["crashed"]["finished"] is False and rows["crashed"]["test_accuracy"] is None


def test_runs_command_sorts_and_prints_json(runs_folder, capsys):
    assert main(["runs", str(runs_folder), "--sort", "test"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:7] == ["name", "model", "recipe", "dataset", "epochs", "val", "test"]
    accuracies = digitlab.list_runs(runs_folder, sort="test")
    best_first = sorted((row for row in accuracies if row["test_accuracy"]), key=lambda row: -row["test_accuracy"])
    assert [line.split()[0] for line in lines[1:]] == [row["name"] for row in best_first] + ["crashed"]
    assert f"{best_first[0]['test_accuracy']:.2%}" in lines[1]

    assert main(["runs", str(runs_folder), "--json", "--sort", "name"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in listed] == ["crashed", "fast", "nested/fashion", "slow"]


def test_runs_bad_input_is_one_line(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ConfigError, match="cannot sort by"):
        digitlab.list_runs(tmp_path, sort="colour")


def test_compare_finds_disagreements_and_differences(runs_folder, mnist, tmp_path):
    page = tmp_path / "page.html"
    comparison = digitlab.compare([runs_folder / "fast", runs_folder / "slow"], out=page)
    assert comparison.path == page and not comparison.notes
    assert comparison.differences == {"lr": [5e-3, 1e-3], "model_kwargs": [{}, {"hidden": [16]}]}

    fast, slow = digitlab.load_run(runs_folder / "fast"), digitlab.load_run(runs_folder / "slow")
    right = [predict_logits(run.model, mnist.test.images).argmax(1) == mnist.test.labels for run in (fast, slow)]
    expected = (right[0] & ~right[1]).nonzero().flatten().tolist()
    by_pair = {(item.right, item.wrong): item.index for item in comparison.disagreements}
    assert by_pair[("fast", "slow")] == expected
    assert len(by_pair[("slow", "fast")]) == int((right[1] & ~right[0]).sum())

    recall = [row["recall"] for row in fast.metrics["test"]["per_class"]]
    assert comparison.per_class["mnist"]["runs"]["fast"] == recall
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 3  # the curves and one grid per direction
    assert f"{len(expected):,} digits fast gets right, slow wrong" in html.unescape(text)
    assert f"{recall[0]:.2%}" in text
    shown = comparison._repr_html_()  # in Jupyter: the content, without styles that would restyle the notebook
    assert "<style" not in shown and shown.count("data:image/png;base64,") == 3


def test_compare_runs_of_different_datasets(runs_folder, tmp_path, capsys):
    out = tmp_path / "mixed.html"
    code = main(["compare", str(runs_folder / "fast"), str(runs_folder / "nested" / "fashion"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert printed.startswith("these runs are on different datasets")
    assert "per-class test accuracy (mnist)" in printed and "per-class test accuracy (fashion-mnist)" in printed
    assert "gets right" not in printed  # no digit is compared across datasets
    assert re.search(r"dataset\s+mnist\s+fashion-mnist", printed)
    assert "T-shirt/top" in out.read_text()


def test_compare_bad_input(runs_folder, tmp_path, capsys):
    with pytest.raises(ConfigError, match="at least two runs"):
        digitlab.compare([runs_folder / "fast"], write=False)
    assert main(["compare", str(runs_folder / "fast"), str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "missing" in error
    with pytest.raises(RunError):
        digitlab.compare([runs_folder / "fast", runs_folder / "crashed"], write=False)


def test_run_card_and_figures_show_in_jupyter(runs_folder):
    run = digitlab.load_run(runs_folder / "fast")
    card = run._repr_html_()
    assert "mlp" in card and "mnist" in card and str(runs_folder / "fast") in card
    assert f"{run.metrics['test_accuracy']:.2%}" in card
    thumbnail = re.search(r'src="data:image/png;base64,([^"]+)"', card).group(1)
    assert base64.b64decode(thumbnail).startswith(b"\x89PNG")
    figure = digitlab.figures.predictions.training_curves(run.metrics["history"])
    assert figure._repr_png_().startswith(b"\x89PNG")


@pytest.mark.slow
def test_a_real_kernel_shows_a_run_a_figure_and_a_progress_widget(runs_folder, tmp_path):
    import ipywidgets  # noqa: F401  (the progress widget needs it in the kernel)
    import nbclient
    import nbformat

    notebook = nbformat.v4.new_notebook()
    config = f"digitlab.TrainConfig(epochs=1, train_size=2000, out={str(tmp_path / 'run')!r})"
    notebook.cells = [
        nbformat.v4.new_code_cell(f"import digitlab\nrun = digitlab.load_run({str(runs_folder / 'fast')!r})\nrun"),
        nbformat.v4.new_code_cell("digitlab.figures.predictions.training_curves(run.metrics['history'])"),
        nbformat.v4.new_code_cell(f"digitlab.train({config}, progress=True)"),
    ]
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    card, figure, trained = (cell.outputs[-1]["data"] for cell in notebook.cells)
    assert "test accuracy" in card["text/html"]
    assert base64.b64decode(figure["image/png"]).startswith(b"\x89PNG")
    assert str(tmp_path / "run") in trained["text/html"]
    kinds = [kind for output in notebook.cells[2].outputs for kind in output.get("data", {})]
    assert "application/vnd.jupyter.widget-view+json" in kinds  # the bar is a widget, not text
