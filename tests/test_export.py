"""Export: ONNX and TorchScript files that compute what the PyTorch model computes, or no file at all."""

import json
import shutil
import sys
import warnings

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from digitlab import TrainConfig
from digitlab.cli import main
from digitlab.data.datasets import to_float
from digitlab.errors import ExportError
from digitlab.export.onnx import export_model, load_torchscript, read_onnx_metadata
from digitlab.runs.run import Run


@pytest.fixture
def run_copy(seed_run, tmp_path):
    """A private copy of the session's short real run, so exports do not touch the shared folder."""
    return shutil.copytree(seed_run.path, tmp_path / "run")


def test_onnx_export_matches_pytorch_on_real_digits(seed_run, run_copy, mnist, capsys):
    assert main(["export", str(run_copy), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run_copy / 'model.onnx'}" in out and "1,000 test digits" in out
    session = onnxruntime.InferenceSession(str(run_copy / "model.onnx"), providers=["CPUExecutionProvider"])
    images = to_float(mnist.test.images[:1000])
    with torch.no_grad():
        expected = seed_run.model(images)
    found = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    assert (found - expected).abs().max() < 1e-4 and torch.equal(found.argmax(1), expected.argmax(1))
    for batch in (1, 33):  # the batch dimension is dynamic
        assert session.run(None, {"images": images[:batch].numpy()})[0].shape == (batch, 10)
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]


def test_onnx_metadata_states_the_preprocessing_contract(run_copy):
    export_model(run_copy)
    metadata = read_onnx_metadata(run_copy / "model.onnx")
    assert metadata["input_shape"] == "N,1,28,28" and metadata["input_dtype"] == "float32"
    assert "pixel / 255" in metadata["scaling"] and "white ink on black" in metadata["scaling"]
    assert json.loads(metadata["classes"]) == list("0123456789") and metadata["model"] == "mlp"
    assert metadata["digitlab_version"] == __import__("digitlab").__version__


def test_torchscript_export_matches_and_carries_metadata(seed_run, run_copy, mnist):
    report = export_model(run_copy, "torchscript")
    assert report["path"] == str(run_copy / "model.torchscript.pt") and report["count"] == 1000
    extra = {"digitlab.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(report["path"], _extra_files=extra)
    assert json.loads(extra["digitlab.json"])["input_shape"] == "N,1,28,28"
    images = to_float(mnist.test.images[2000:2100])
    with torch.no_grad():
        assert torch.allclose(loaded(images), seed_run.model(images), atol=1e-5)
        assert load_torchscript(report["path"])(images[:1]).shape == (1, 10)


class ShapeDependent(nn.Module):
    """Doubles its logits for batches under 5: tracing bakes in the branch of its example (2 images)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(784, 10)

    def forward(self, images):
        logits = self.linear(images.flatten(1))
        return logits * 2 if images.shape[0] < 5 else logits


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_an_export_that_differs_is_refused_and_leaves_no_file(tmp_path, mnist, format):
    run = Run(tmp_path, ShapeDependent(), TrainConfig(), {})
    name = "model.onnx" if format == "onnx" else "model.torchscript.pt"
    (tmp_path / name).write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match=r"does not match PyTorch on 1,000 test digits.*nothing written"):
        export_model(run, format)
    assert [path.name for path in tmp_path.iterdir()] == [name]  # no temp file left behind
    assert (tmp_path / name).read_bytes() == b"an earlier export"


def test_missing_onnx_packages_are_a_one_line_error(run_copy, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", str(run_copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'digitlab[export]'" in err[0]
    assert not (run_copy / "model.onnx").exists()


def test_export_of_a_missing_run_is_exit_code_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_a_bare_model_file_exports_next_to_it(run_copy, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_copy / "model.safetensors", bare / "model.safetensors")
    report = export_model(bare / "model.safetensors", "onnx")
    assert report["path"] == str(bare / "model.onnx") and np.isfinite(report["max_abs_diff"])
