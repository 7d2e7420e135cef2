"""Prediction on real image files: accuracy on rendered scans, JSON and table output, per-file errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.cli import main
from digitlab.errors import ImageError
from digitlab.inference.evaluate import predict_logits
from scans import png_bytes, render_scan
from test_preprocess import write_png_with_declared_size


@pytest.fixture(scope="module")
def scans(mnist, tmp_path_factory):
    """500 test digits (fixed seed) saved as scans: dark ink on light paper, 40-200 px, off-centre, noisy.

    One in five is a JPEG (quality 90), the rest PNG. Returns (paths, the digits as tensors, labels).
    """
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(2024)
    index = torch.from_numpy(rng.choice(len(mnist.test), 500, replace=False))
    paths = []
    for number, digit in enumerate(mnist.test.images[index]):
        scan = render_scan(digit[0].numpy(), rng)
        path = folder / (f"{number:03d}.jpg" if number % 5 == 4 else f"{number:03d}.png")
        scan.save(path, quality=90) if path.suffix == ".jpg" else path.write_bytes(png_bytes(scan))
        paths.append(path)
    return paths, mnist.test.images[index], mnist.test.labels[index]


@pytest.mark.slow
def test_scans_are_read_as_well_as_the_tensors(seed_run, scans, capsys):
    paths, images, labels = scans
    tensor_accuracy = (predict_logits(seed_run.model, images).argmax(1) == labels).double().mean().item()
    assert main(["predict", str(seed_run.path), *map(str, paths), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [entry["file"] for entry in report] == list(map(str, paths))
    predicted = torch.tensor([int(entry["label"]) for entry in report])
    scan_accuracy = (predicted == labels).double().mean().item()
    print(f"\n500 rendered scans: accuracy {scan_accuracy:.2%} through files, {tensor_accuracy:.2%} as tensors")
    assert tensor_accuracy > 0.9
    assert abs(scan_accuracy - tensor_accuracy) <= 0.015


def test_json_gives_probabilities_that_sum_to_one_in_input_order(seed_run, scans, capsys):
    paths = [str(path) for path in scans[0][:6]]
    order = paths[::-1]
    assert main(["predict", str(seed_run.path), *order, "--json", "--top-k", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [entry["file"] for entry in report] == order
    for entry in report:
        probabilities = entry["probabilities"]
        assert len(probabilities) == 10 and all(0 <= p <= 1 for p in probabilities)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-9)
        assert entry["confidence"] == max(probabilities) and entry["label"] == str(int(np.argmax(probabilities)))
        ranked = [item["probability"] for item in entry["top_k"]]
        assert len(ranked) == 3 and ranked == sorted(ranked, reverse=True)
        assert entry["top_k"][0]["label"] == entry["label"]


@pytest.fixture
def mixed_folder(tmp_path, scans):
    """Two good scans and one file for every kind of bad input, in a folder (sorted names give the order)."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "a-good.png").write_bytes(scans[0][0].read_bytes())
    (folder / "b-text.png").write_text("this is not a picture\n")
    (folder / "c-truncated.png").write_bytes(scans[0][1].read_bytes()[:300])
    (folder / "d-empty.jpg").write_bytes(b"")
    (folder / "e-blank.png").write_bytes(png_bytes(Image.new("L", (120, 90), 228)))
    write_png_with_declared_size(folder / "f-bomb.png", 20_000, 6_000)
    (folder / "g-good.jpg").write_bytes(scans[0][4].read_bytes())
    (folder / "readme.txt").write_text("skipped: not an image suffix\n")
    return folder


PROBLEMS = {
    "b-text.png": "not an image file",
    "c-truncated.png": "truncated or corrupt",
    "d-empty.jpg": "empty file",
    "e-blank.png": "no ink found",
    "f-bomb.png": "decompression-bomb guard",
}


def test_bad_files_get_one_error_line_each_and_the_rest_are_predicted(seed_run, mixed_folder, capsys):
    assert main(["predict", str(seed_run.path), str(mixed_folder)]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == len(PROBLEMS) and "Traceback" not in captured.err
    for line, (name, problem) in zip(errors, PROBLEMS.items(), strict=True):
        assert line.startswith(f"digitlab: error: {mixed_folder / name}: ") and problem in line
    table = captured.out.strip().splitlines()
    assert table[0].split() == ["file", "label", "confidence"] and len(table) == 3
    assert str(mixed_folder / "a-good.png") in table[1] and str(mixed_folder / "g-good.jpg") in table[2]


def test_json_keeps_failed_files_in_place_with_an_error(seed_run, mixed_folder, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert main(["predict", str(seed_run.path), str(mixed_folder), str(missing), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    names = [entry["file"].rsplit("/", 1)[-1] for entry in report]
    assert names == ["a-good.png", *PROBLEMS, "g-good.jpg", "missing.png"]
    assert [sorted(entry) for entry in report if "error" in entry] == [["error", "file"]] * 6
    assert report[-1]["error"] == "no such file"
    assert all(sum(entry["probabilities"]) == pytest.approx(1.0) for entry in report if "error" not in entry)


def test_save_preprocessed_writes_what_the_model_saw(seed_run, scans, tmp_path, capsys):
    out = tmp_path / "seen"
    paths = [str(path) for path in scans[0][:3]]
    assert main(["predict", str(seed_run.path), *paths, "--save-preprocessed", str(out)]) == 0
    saved = sorted(out.iterdir())
    assert [path.name for path in saved] == ["000.png", "001.png", "002.png"]
    for path, result in zip(saved, seed_run.predict(paths), strict=True):
        picture = np.asarray(Image.open(path))
        assert picture.shape == (28, 28) and np.array_equal(picture, result.image[0].numpy())


def test_the_python_api_takes_paths_pil_images_and_arrays(seed_run, mnist, scans):
    path = scans[0][0]
    digit = mnist.test.images[:4]
    results = seed_run.predict([path, Image.open(path), digit[0, 0].numpy(), 255 - digit[1, 0]], top_k=2)
    assert [result.source for result in results] == [str(path), "image 1", "image 2", "image 3"]
    assert results[0].probabilities == results[1].probabilities
    expected = predict_logits(seed_run.model, digit[:2]).argmax(1).tolist()
    assert [results[2].index, results[3].index] == expected
    batch = seed_run.predict(digit)  # a (N, 1, 28, 28) tensor is N images
    assert [result.index for result in batch] == predict_logits(seed_run.model, digit).argmax(1).tolist()
    with pytest.raises(ImageError, match=r"^image 1: no ink found"):
        seed_run.predict([digit[0, 0], np.zeros((28, 28))])
    collected = seed_run.predict([np.zeros((28, 28)), digit[0, 0]], errors="collect")
    assert collected[0].error == "no ink found (blank image)" and collected[1].ok


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--top-k", "0"], "top-k must be between 1 and 10"),
        (["--batch-size", "0"], "batch size must be at least 1"),
    ],
)
def test_bad_options_are_usage_errors(seed_run, scans, capsys, args, needle):
    assert main(["predict", str(seed_run.path), str(scans[0][0]), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_a_missing_run_is_exit_code_2(tmp_path, scans, capsys):
    assert main(["predict", str(tmp_path / "no-run"), str(scans[0][0])]) == 2
    assert "no run folder" in capsys.readouterr().err
