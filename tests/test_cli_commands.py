"""Commands and behaviours that had no test of their own (issue 28): `models`, `data fetch`, `augment-preview`,
`evaluate --robustness`, `predict --preprocess`, `predict` and `serve` with no run (the shipped model), the
warning for a model file saved before preprocessing was recorded, and a missing shipped segmenter."""

import gzip
import http.client
import http.server
import json
import shutil
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import digitlab
import digitlab.runs.run
import digitlab.serving.app
from digitlab.cli import main
from digitlab.config import PreprocessOptions
from digitlab.data.datasets import dataset_info
from digitlab.data.fetch import data_root, sha256_of
from digitlab.inference.evaluate import ROBUSTNESS_TRANSFORMS, robustness
from digitlab.models.nets import count_parameters, create_model, list_models
from digitlab.runs.shipped import load_shipped
from scans import render_scan


def test_models_lists_every_registered_model_with_its_size(capsys):
    assert main(["models"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert [row[0] for row in rows] == list_models()
    assert [row[1] for row in rows] == [f"{count_parameters(create_model(name)):,}" for name in list_models()]


@pytest.fixture
def labels_mirror(tmp_path):
    """A local HTTP mirror that serves MNIST's test labels (gzipped, the mirrors' form) and nothing else."""
    served = tmp_path / "served"
    served.mkdir()
    cached = data_root() / "mnist" / "t10k-labels-idx1-ubyte"
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(cached.read_bytes()))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_data_fetch_keeps_verified_files_and_fetches_a_corrupt_one_again(
    mnist, labels_mirror, tmp_path, monkeypatch, capsys
):
    root = tmp_path / "data"
    shutil.copytree(data_root() / "mnist", root / "mnist", ignore=shutil.ignore_patterns(".*"))
    corrupt = root / "mnist" / "t10k-labels-idx1-ubyte"
    corrupt.write_bytes(corrupt.read_bytes()[:-1] + b"\x00")
    monkeypatch.setenv("DIGITLAB_MIRRORS", labels_mirror)
    assert main(["data", "fetch", "--root", str(root)]) == 0
    captured = capsys.readouterr()
    printed = [Path(line) for line in captured.out.strip().splitlines()]
    expected = dataset_info("mnist").sha256
    assert sorted(path.name for path in printed) == sorted(expected)
    assert all(path.parent == root / "mnist" and sha256_of(path) == expected[path.name] for path in printed)
    assert f"{corrupt} fails its checksum" in captured.err and "downloading" in captured.err


def test_augment_preview_draws_the_digit_and_refuses_a_flip_sized_rotation(mnist, tmp_path, capsys):
    out = tmp_path / "preview.png"
    assert main(["augment-preview", "--digit", "7", "--draws", "4", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as picture:
        assert picture.format == "PNG" and min(picture.size) > 100
        assert np.asarray(picture.convert("L")).std() > 10  # drawn, not blank
    assert main(["augment-preview", "--augment-rotate", "120", "--out", str(tmp_path / "no.png")]) == 2
    assert "augmentation out of range" in capsys.readouterr().err and not (tmp_path / "no.png").exists()


def test_evaluate_robustness_reports_each_transform_as_the_api_computes_it(seed_run, mnist, capsys):
    assert main(["evaluate", str(seed_run.path), "--split", "val", "--robustness", "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)["robustness"]
    expected = robustness(seed_run.model, mnist.val)
    assert list(reported) == ["clean", *(name for name, *_ in ROBUSTNESS_TRANSFORMS)]
    assert reported == pytest.approx(expected, abs=1e-4)
    # the transforms are real: a one-epoch MLP loses much of its accuracy to a 30° turn
    assert reported["rotate +30°"] < reported["clean"] - 0.1


@pytest.fixture(scope="module")
def scan_of_a_seven(mnist, tmp_path_factory):
    index = int(np.flatnonzero(mnist.test.labels.numpy() == 7)[0])
    path = tmp_path_factory.mktemp("scan") / "seven.png"
    render_scan(mnist.test.images[index, 0].numpy(), np.random.default_rng(3), side=160).save(path)
    return path


def saved_picture(folder: Path) -> np.ndarray:
    [path] = folder.iterdir()
    return np.asarray(Image.open(path))


def test_predict_preprocess_switches_steps_as_the_python_api_does(seed_run, scan_of_a_seven, tmp_path):
    for steps in ("legacy", "no-clean,no-stroke"):
        out = tmp_path / steps
        assert (
            main(
                [
                    "predict",
                    str(seed_run.path),
                    str(scan_of_a_seven),
                    "--preprocess",
                    steps,
                    "--save-preprocessed",
                    str(out),
                ]
            )
            == 0
        )
        options = seed_run.preprocess.with_steps(steps)
        [expected] = seed_run.predict([scan_of_a_seven], preprocess=options)
        assert np.array_equal(saved_picture(out), expected.image[0].numpy())
    assert (
        main(["predict", str(seed_run.path), str(scan_of_a_seven), "--save-preprocessed", str(tmp_path / "default")])
        == 0
    )
    assert not np.array_equal(saved_picture(tmp_path / "default"), saved_picture(tmp_path / "legacy"))
    assert main(["predict", str(seed_run.path), str(scan_of_a_seven), "--preprocess", "no-such-step"]) == 2


def test_predict_with_no_run_reads_with_the_shipped_model(scan_of_a_seven, capsys):
    assert main(["predict", str(scan_of_a_seven), "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    [expected] = load_shipped().predict([scan_of_a_seven])
    assert answer["label"] == "7" == expected.label
    assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)


def test_serve_with_no_run_serves_the_shipped_model(scan_of_a_seven):
    server = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        line = server.stdout.readline()  # the ready line: the server listens once it is printed
        assert "http://127.0.0.1:" in line, line + server.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split()[0].strip("/"))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/api/model")
        about = json.loads(connection.getresponse().read())
        assert about["model"] == "cnn" and about["parameters"] == count_parameters(load_shipped().model)
        body, boundary = _form(scan_of_a_seven)
        connection.request("POST", "/api/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["label"] == "7"
        connection.close()
        server.send_signal(signal.SIGINT)
        assert server.wait(30) in (0, 130)
    finally:
        server.kill()
        server.wait()


def _form(path: Path) -> tuple[bytes, str]:
    boundary = "digitlab-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), boundary


def test_a_model_file_saved_before_preprocessing_was_recorded_warns_and_reads_the_old_way(
    seed_run, scan_of_a_seven, tmp_path
):
    old = tmp_path / "old.safetensors"
    with safe_open(str(seed_run.path / "model.safetensors"), "pt") as stored:
        metadata = {key: value for key, value in stored.metadata().items() if key != "preprocess"}
        tensors = {name: stored.get_tensor(name) for name in stored.keys()}  # noqa: SIM118 (safe_open is no dict)
    save_file(tensors, str(old), metadata=metadata)
    with pytest.warns(UserWarning, match="saved before models recorded their preprocessing"):
        run = digitlab.load_run(old)
    assert run.preprocess == PreprocessOptions(legacy=True)
    with pytest.warns(UserWarning, match="digitlab 0.1's preprocessing"):
        assert main(["predict", str(old), str(scan_of_a_seven), "--save-preprocessed", str(tmp_path / "seen")]) == 0
    [legacy] = seed_run.predict([scan_of_a_seven], preprocess=PreprocessOptions(legacy=True))
    assert np.array_equal(saved_picture(tmp_path / "seen"), legacy.image[0].numpy())


def test_a_missing_shipped_segmenter_is_an_error_not_a_quiet_fallback(seed_run, tmp_path, monkeypatch, capsys):
    assert digitlab.runs.run.SEGMENTER_FILE.is_file()  # the installation under test has it
    missing = tmp_path / "digitlab-segmenter.safetensors"
    monkeypatch.setattr(digitlab.runs.run, "SEGMENTER_FILE", missing)
    monkeypatch.setattr(digitlab.runs.run, "_SEGMENTERS", {})
    with pytest.raises(digitlab.errors.RunError, match=f"segmenter shipped with digitlab is missing \\({missing}\\)"):
        seed_run.segmenter()
    picture = tmp_path / "two.png"
    Image.fromarray(np.full((60, 90), 240, np.uint8)).save(picture)
    assert main(["predict", str(seed_run.path), str(picture), "--number", "--number-reader", "segmenter"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"digitlab: error: the segmenter shipped with digitlab is missing ({missing}): reinstall digitlab"
    ]
    started = []
    monkeypatch.setattr(digitlab.serving.app, "serve", lambda *args, **kwargs: started.append(True))
    assert main(["serve", str(seed_run.path), "--port", "0"]) == 2 and not started
    assert "segmenter shipped with digitlab is missing" in capsys.readouterr().err
