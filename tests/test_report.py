"""The visual report: calibration math, selections, every figure of a real short run, the page, the CLI."""

import contextlib
import io
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image
from torch import nn

import digitlab
from digitlab import TrainConfig
from digitlab.cli import main
from digitlab.figures import predictions as viz
from digitlab.inference.evaluate import (
    calibration,
    confident_mistakes,
    misclassified,
    most_confused_pairs,
    predict_logits,
    uncertain_predictions,
)
from digitlab.runs.report import Section, render_html, write_report
from digitlab.runs.run import Run
from test_cli import assert_one_line_error, run_cli

FIXED_SIZES = {  # figures whose size does not depend on the data, in pixels
    "class_distribution.png": (900, 400),
    "training_curves.png": (1000, 400),
    "confusion_matrix.png": (720, 600),
    "reliability.png": (650, 700),
}
DIGIT, SEED = 3, 5


class ImageTags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


@pytest.fixture(scope="module")
def report(seed_run, tmp_path_factory):
    """A copy of the 1-epoch seed run (so the shared fixture's folder stays as train wrote it) with its report."""
    folder = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(seed_run.path, folder)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(folder), "--digit", str(DIGIT), "--seed", str(SEED)]) == 0
    index = folder / "report" / "index.html"
    tags = ImageTags()
    tags.feed(index.read_text())
    return {"run": folder, "index": index, "images": tags.images, "printed": printed.getvalue()}


@pytest.fixture(scope="module")
def test_predictions(seed_run, mnist):
    return predict_logits(seed_run.model, mnist.test.images).softmax(1)


def numpy_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    total = 0.0
    for number in range(bins):
        lower, upper = number / bins, (number + 1) / bins
        inside = (confidence > lower) & (confidence <= upper)
        if inside.any():
            total += (
                inside.sum()
                / len(labels)
                * abs((predicted[inside] == labels[inside]).mean() - confidence[inside].mean())
            )
    return total


def test_ece_by_hand():
    # confidence 0.9 right and 0.9 wrong share bin 13 (0.867, 0.933]; 0.62 right is in bin 9; 0.5 wrong in bin 7
    probabilities = torch.tensor(
        [[0.9, 0.1, 0.0], [0.9, 0.05, 0.05], [0.2, 0.62, 0.18], [0.2, 0.5, 0.3]], dtype=torch.float64
    )
    labels = torch.tensor([0, 1, 1, 0])
    expected = (2 / 4) * abs(0.5 - 0.9) + (1 / 4) * abs(1 - 0.62) + (1 / 4) * abs(0 - 0.5)
    result = calibration(probabilities, labels, bins=15)
    assert result["ece"] == pytest.approx(expected, abs=1e-12)
    assert [row["count"] for row in result["bins"]] == [0] * 7 + [1, 0, 1, 0, 0, 0, 2, 0]
    assert result["bins"][13]["accuracy"] == 0.5 and result["bins"][13]["confidence"] == pytest.approx(0.9)
    assert result["bins"][0]["accuracy"] is None and result["bins"][0]["confidence"] is None


def test_ece_matches_numpy_on_random_predictions():
    generator = torch.Generator().manual_seed(0)
    probabilities = (torch.randn(5000, 10, generator=generator, dtype=torch.float64) * 3).softmax(1)
    labels = torch.randint(0, 10, (5000,), generator=generator)
    result = calibration(probabilities, labels)
    assert result["ece"] == pytest.approx(numpy_ece(probabilities.numpy(), labels.numpy()), abs=1e-12)
    assert sum(row["count"] for row in result["bins"]) == 5000 and len(result["bins"]) == 15


def test_selections_follow_their_definitions(seed_run, mnist, test_predictions):
    labels, probabilities = mnist.test.labels, test_predictions
    confidence, predicted = probabilities.max(1)
    wrong = confident_mistakes(probabilities, labels)
    assert len(wrong) > 0 and (predicted[wrong] != labels[wrong]).all() and (confidence[wrong] > 0.8).all()
    assert (confidence[wrong][:-1] >= confidence[wrong][1:]).all()
    assert len(wrong) == int(((predicted != labels) & (confidence > 0.8)).sum())
    unsure = uncertain_predictions(probabilities)
    assert torch.equal(unsure, torch.tensor([i for i in range(len(labels)) if confidence[i] < 0.5]))
    mistakes = misclassified(probabilities, labels)
    assert torch.equal(mistakes[:25], torch.tensor([i for i in range(len(labels)) if predicted[i] != labels[i]][:25]))
    confusion = torch.tensor([[5, 1, 7], [2, 9, 0], [3, 3, 4]])
    assert most_confused_pairs(confusion, top=3) == [(0, 2, 7), (2, 0, 3), (2, 1, 3)]
    assert most_confused_pairs(torch.eye(3, dtype=torch.long)) == []


def texts(figure):
    return [text.get_text() for axes in figure.axes for text in axes.texts]


def test_prediction_figures_title_and_frame_the_right_digits(mnist, test_predictions):
    images, labels, classes = mnist.test.images, mnist.test.labels, mnist.classes
    predicted = test_predictions.argmax(1)
    overview = viz.misclassified_overview(images, labels, test_predictions, classes)
    first = misclassified(test_predictions, labels)[:25].tolist()
    assert [t.split("\n")[0] for t in texts(overview)] == [f"true {labels[i]} · pred {predicted[i]}" for i in first]
    unsure = viz.uncertain(images, labels, test_predictions, classes)
    frames = [patch.get_edgecolor() for patch in unsure.axes[0].patches]
    expected = [
        viz.RIGHT if predicted[i] == labels[i] else viz.WRONG for i in uncertain_predictions(test_predictions)[:25]
    ]
    assert frames == [to_rgba(color) for color in expected]
    assert len(set(expected)) == 2  # uncertain digits are both right and wrong, so the check above means something
    sample = viz.random_sample(images, labels, test_predictions, classes, seed=SEED)
    drawn = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED))[:25].tolist()
    assert [t.split("\n")[0] for t in texts(sample)] == [f"true {labels[i]} · pred {predicted[i]}" for i in drawn]
    shown = [
        float(t.split("\n")[1].split("%")[0])
        for t in texts(viz.confidently_wrong(images, labels, test_predictions, classes))
    ]
    assert len(shown) == 25 and min(shown) > 80 and shown == sorted(shown, reverse=True)


def test_mlp_first_layer_is_a_4x8_grid_of_the_weights_centred_at_zero(seed_run):
    figure = viz.first_layer(seed_run.model)
    image = figure.axes[0].images[0]
    canvas = np.ma.getdata(image.get_array())
    filled = ~np.ma.getmaskarray(image.get_array())
    row_bands = np.flatnonzero(np.diff(np.concatenate([[0], filled.any(1).astype(int)])) == 1)
    column_bands = np.flatnonzero(np.diff(np.concatenate([[0], filled.any(0).astype(int)])) == 1)
    assert (len(row_bands), len(column_bands)) == (4, 8)
    weights = seed_run.model.linear_layers()[0].weight.detach().reshape(32, 28, 28).numpy()
    for unit in (0, 13, 31):
        top, left = row_bands[unit // 8], column_bands[unit % 8]
        assert np.allclose(canvas[top : top + 28, left : left + 28], weights[unit])
    assert image.get_cmap().name == "RdBu_r" and image.norm.vmin == -image.norm.vmax == -np.abs(weights).max()


class TinyConv(nn.Module):
    """A throwaway convolutional model, known only to this test."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5)
        self.head = nn.Linear(6 * 24 * 24, 10)

    def forward(self, images):
        return self.head(torch.relu(self.conv(images)).flatten(1))


class Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Bilinear(784, 784, 10)

    def forward(self, images):
        flat = images.flatten(1)
        return self.layer(flat, flat)


@pytest.mark.slow
def test_conv_models_get_filters_and_feature_maps(mnist, tmp_path):
    torch.manual_seed(0)
    model = TinyConv().eval()
    filters = viz.first_layer(model)
    assert np.allclose(
        np.ma.getdata(filters.axes[0].images[0].get_array())[:5, :5], model.conv.weight[0, 0].detach().numpy()
    )
    maps = viz.activations(model, mnist.test.images[:3], mnist.test.labels[:3], mnist.classes)
    expected = model.conv(digitlab.data.datasets.to_float(mnist.test.images[:1]))[0, 2].detach().numpy()
    step = 24 + round(0.12 / (1.0 / 24))  # second tile of the first row starts one tile plus a gap in
    canvas = np.ma.getdata(maps.axes[0].images[0].get_array())
    assert np.allclose(canvas[:24, 2 * step : 2 * step + 24], expected, atol=1e-6)
    run = Run(path=None, model=model, config=TrainConfig(), metrics={})
    index = write_report(run, out=tmp_path / "conv")
    page = index.read_text()
    assert 'src="first_layer.png"' in page and 'src="activations.png"' in page
    assert 'src="saliency.png"' in page and 'src="filter_digits.png"' in page
    assert "no training history" in page and not (tmp_path / "conv" / "training_curves.png").exists()


def test_unknown_models_get_a_note_and_new_types_register_their_own_figure(seed_run):
    assert viz.first_layer(Opaque()) is None and viz.activations(Opaque(), None, None, ()) is None

    class Registered(Opaque):
        pass

    @viz.first_layer.register(Registered)
    def _(model):
        return viz.note_figure("registered", "drawn by the test's own function")

    assert texts(viz.first_layer(Registered())) == ["drawn by the test's own function"]
    assert viz.first_layer(Opaque()) is None and viz.first_layer(seed_run.model).axes[0].images
    run = Run(path=None, model=Opaque(), config=TrainConfig(), metrics={})
    metrics = {"accuracy": 0.1, "macro_f1": 0.1, "count": 1}
    page = render_html(
        run,
        metrics,
        0.0,
        [
            Section(
                "Inside the model",
                {"first_layer.png": None},
                note="digitlab has no picture of the inside of a Opaque yet",
            )
        ],
        {},
    )
    assert "no picture of the inside of a Opaque yet" in page and "<img" not in page


def test_every_figure_is_a_real_png_of_the_expected_size(report):
    folder = report["index"].parent
    sources = [tag["src"] for tag in report["images"]]
    assert sorted(sources) == sorted(path.name for path in folder.glob("*.png"))
    assert len(sources) == 14 and f"examples_of_{DIGIT}.png" in sources
    for tag in report["images"]:
        with Image.open(folder / tag["src"]) as png:
            assert png.format == "PNG" and png.size == (int(tag["width"]), int(tag["height"]))
            assert png.size == FIXED_SIZES.get(tag["src"], png.size)
            assert 400 <= png.size[0] <= 1600 and 300 <= png.size[1] <= 1200, (tag["src"], png.size)
            gray = np.asarray(png.convert("L"), dtype=np.float64)
        assert gray.var() > 300, f"{tag['src']} looks blank (variance {gray.var():.0f})"
        assert (gray < 200).mean() > 0.02, f"{tag['src']} has almost nothing drawn"


def test_html_references_only_files_that_exist_and_holds_the_per_class_table(report, seed_run):
    page = report["index"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "http" not in page.replace('lang="en"', "")
    for tag in report["images"]:
        assert (report["index"].parent / tag["src"]).is_file() and tag["alt"]
    metrics = digitlab.evaluate(seed_run)
    for row in metrics["per_class"]:
        assert (
            f"<tr><td>{row['class']}</td><td>{row['precision']:.4f}</td><td>{row['recall']:.4f}</td>"
            f"<td>{row['f1']:.4f}</td>"
        ) in page


def test_ece_is_stored_in_metrics_json(report, seed_run, mnist, test_predictions):
    saved = json.loads((report["run"] / "metrics.json").read_text())
    expected = numpy_ece(test_predictions.double().numpy(), mnist.test.labels.numpy())
    assert saved["ece"] == pytest.approx(expected, abs=1e-9) and 0 < saved["ece"] < 0.1
    assert {key: value for key, value in saved.items() if key != "ece"} == json.loads(
        (seed_run.path / "metrics.json").read_text()
    )
    assert f"{saved['ece']:.2%}" in report["index"].read_text()


def test_report_command_prints_the_index_path(report):
    assert report["printed"] == f"{report['index']}\n"


@pytest.mark.slow
def test_train_with_report_writes_it_and_still_ends_with_the_run(tmp_path, mnist, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--batch-size", "256", "--report", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"run saved to {out}" and lines[-2] == f"report written to {out / 'report' / 'index.html'}"
    assert (out / "report" / "confusion_matrix.png").is_file() and "ece" in json.loads(
        (out / "metrics.json").read_text()
    )


def test_a_missing_run_is_a_one_line_error():
    assert_one_line_error(run_cli("report", "/no/such/run"), "no run folder at /no/such/run")


@pytest.mark.parametrize(
    "damage, args, needle",
    [
        ("truncate", [], "model.safetensors is not a readable safetensors file"),
        ("metrics", [], "metrics.json is unreadable or corrupt"),
        (None, ["--digit", "12"], "digit must be a class index from 0 to 9, got 12"),
    ],
)
def test_bad_report_input_is_a_one_line_error_and_writes_nothing(damage, args, needle, seed_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(seed_run.path, folder)
    if damage == "truncate":
        (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-100])
    elif damage == "metrics":
        (folder / "metrics.json").write_text('{"test_accuracy": 0.9')
    assert main(["report", str(folder), *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("digitlab: error: ") and needle in error and error.count("\n") == 1
    assert not (folder / "report").exists()
