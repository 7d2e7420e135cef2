"""`digitlab export RUN --format web`: what the folder holds, and what is refused before anything is written.

The page itself, in a real browser, is tested in test_webexport_browser.py.
"""

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from PIL import Image

import digitlab
from digitlab.data.fetch import data_root, fetch_npm_package
from digitlab.errors import DataError, ExportError
from digitlab.export import web as webexport
from digitlab.inference.realworld import DEFAULT_COUNT
from digitlab.serving.app import create_app

SRC = Path(__file__).resolve().parents[1] / "src"


def test_folder_holds_the_page_the_model_and_only_the_runtime_files_it_needs(web_page, seed_run):
    out, report = web_page
    names = {"index.html", "page.js", "page.css", "model.onnx", "model.js"}
    assert set(report["files"]) == names | {"ort.wasm.min.js", "ort-wasm.js"}
    assert {path.name for path in out.iterdir()} == set(report["files"])
    assert report["bytes"] < 8_000_000 and report["hidden"] == [32, 16]
    assert report["count"] == DEFAULT_COUNT and report["disagreements"] == 0 and report["max_abs_diff"] < 1e-4

    proto = onnx.load(out / "model.onnx")
    assert [output.name for output in proto.graph.output] == ["logits", "image", "hidden0", "hidden1"]
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert metadata["model"] == "mlp" and metadata["hidden_outputs"].startswith("hidden0, hidden1:")
    model_script = (out / "model.js").read_text()
    about = json.loads(model_script.split("=", 1)[1].strip().rstrip(";"))
    assert about["classes"] == list("0123456789") and about["parameters"] == 25_818
    assert about["preprocess"] == seed_run.preprocess.to_dict()
    html = (out / "index.html").read_text()
    assert "http" not in html  # nothing from a CDN or any other host
    assert all(f'src="{name}"' in html for name in ("ort.wasm.min.js", "ort-wasm.js", "model.js"))


def test_unsupported_operator_is_named_and_nothing_is_written(seed_run, tmp_path, monkeypatch):
    out = tmp_path / "page"
    supported = webexport.web_operators()
    assert {"Gemm", "Relu", "Conv", "MaxPool", "BatchNormalization", "Flatten"} <= supported
    monkeypatch.setattr(webexport, "web_operators", lambda: supported - {"Gemm"})
    with pytest.raises(ExportError, match=r"cannot run operator\(s\) Gemm .*nothing written"):
        digitlab.export_web(seed_run, out=out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_operator_check_names_custom_and_unknown_operators():
    node = helper.make_node("Fancy", ["x"], ["y"], domain="com.example")
    relu = helper.make_node("Relu", ["y"], ["z"])
    graph = helper.make_graph(
        [node, relu],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])],
    )
    data = helper.make_model(graph).SerializeToString()
    with pytest.raises(ExportError, match=r"operator\(s\) com\.example:Fancy \(opset"):
        webexport.check_web_operators(data)
    with pytest.raises(ExportError, match=r"operator\(s\) Relu, com\.example:Fancy"):
        webexport.check_web_operators(data, supported=set())


def test_a_failed_export_leaves_the_previous_folder_whole(web_page, seed_run, monkeypatch):
    out, _ = web_page
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    monkeypatch.setattr(webexport, "web_operators", lambda: set())
    with pytest.raises(ExportError):
        digitlab.export_web(seed_run, out=out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert [path.name for path in out.parent.iterdir()] == [out.name]  # no temp folder left beside it


@pytest.mark.slow
def test_missing_runtime_without_npm_is_one_line_and_writes_nothing(seed_run, tmp_path):
    """A fresh cache (MNIST linked in, no onnxruntime-web) and no npm on PATH: the CLI says what is missing."""
    root = tmp_path / "cache"
    root.mkdir()
    (root / "mnist").symlink_to(data_root() / "mnist")
    out = tmp_path / "page"
    env = {**os.environ, "DIGITLAB_DATA": str(root), "PATH": str(tmp_path / "nothing"), "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "export", str(seed_run.path), "--format", "web", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "onnxruntime-web@1.30.0" in lines[0] and "npm is not installed" in lines[0]
    assert not out.exists()


def test_tampered_cache_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "npm"
    folder.mkdir()
    (folder / "onnxruntime-web-1.30.0.tgz").write_bytes(b"not the package")
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm: the bad copy is not silently replaced either
    with pytest.raises(
        DataError, match=r"onnxruntime-web@1\.30\.0 is not in .*fails its SHA-256 check\) and npm is not installed"
    ):
        fetch_npm_package(webexport.ORT_WEB, root=tmp_path)


def test_legacy_preprocessing_is_refused(seed_run, tmp_path, monkeypatch):
    monkeypatch.setattr(seed_run, "preprocess", seed_run.preprocess.with_steps("legacy"))
    with pytest.raises(ExportError, match="not 'legacy'"):
        digitlab.export_web(seed_run, out=tmp_path / "page")
    assert not (tmp_path / "page").exists()


@pytest.mark.slow
def test_convolutional_model_exports_without_hidden_outputs(tmp_path):
    """The CNN shipped with digitlab: Conv/BatchNorm/MaxPool all run in Runtime Web; no hidden-layer rows."""
    from digitlab.runs.shipped import load_shipped

    report = digitlab.export_web(load_shipped(), out=tmp_path / "page", verify_count=200)
    assert report["hidden"] == [] and report["disagreements"] == 0
    proto = onnx.load(tmp_path / "page" / "model.onnx")
    assert [output.name for output in proto.graph.output] == ["logits", "image"]
    assert "Conv" in {node.op_type for node in proto.graph.node}


def test_page_graph_answers_as_the_server_does_on_canvas_drawings(web_page, seed_run):
    """The canvas pictures of the real-world suite, posted to the server as the served page posts its pad, and
    run through the exported page's graph in ONNX Runtime (the kernels Runtime Web compiles): the same
    answer, and the same 28×28 within one gray level."""
    out, _ = web_page
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    test = seed_run.data("tested on").test
    samples = list(webexport.render_suite(test.images, test.labels, 40, conditions=("canvas",)))
    with TestClient(create_app(seed_run), base_url="http://127.0.0.1") as client:  # one event loop for the batcher
        for sample in samples:
            url = "data:image/png;base64," + base64.b64encode(sample.data).decode()
            served = client.post("/api/predict", json={"image": url, "name": "drawing"}).json()
            pad = np.asarray(Image.open(io.BytesIO(sample.data)))[..., 0].astype(np.float32)
            logits, image, *_ = session.run(None, {"pad": pad[None, None]})
            assert seed_run.classes[int(logits.argmax())] == served["label"]
            assert np.abs(image[0, 0] - np.array(served["image"])).max() <= 1
