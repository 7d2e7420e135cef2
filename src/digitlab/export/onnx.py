"""Export a run's model for deployment (ONNX or TorchScript) and prove the export computes the same thing.

The exported file is written to a temp file next to its destination, loaded back with its own
runtime (ONNX Runtime, or torch.jit.load), run on 1,000 real test digits and compared with the
PyTorch model: the largest logit difference must stay below 1e-4 and every argmax must agree.
Only then is it renamed into place, so a failed export never leaves a file behind. The file
carries the preprocessing contract (input shape, dtype, scaling, classes) in its metadata.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ..data.datasets import to_float
from ..errors import ExportError
from ..files import atomic_write
from ..runs.run import Run, load_run
from ..version import __version__

EXPORT_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
VERIFY_COUNT = 1000
TOLERANCE = 1e-4
OPSET = 17


def export_model(
    run: Run | str | Path,
    format: str = "onnx",
    out: str | Path | None = None,
    verify_count: int = VERIFY_COUNT,
    tolerance: float = TOLERANCE,
) -> dict:
    """Write the run's model as `format` (onnx | torchscript) to `out` (default RUN/model.onnx or
    RUN/model.torchscript.pt) after verifying it; return {path, format, count, max_abs_diff, disagreements}.

    The batch dimension is dynamic. Raises ExportError when the export fails, when its logits
    differ from PyTorch's by `tolerance` or more or pick another class on any of the first
    `verify_count` test digits, or when the ONNX packages are missing.
    """
    if format not in EXPORT_FILES:
        raise ExportError(f"unknown export format {format!r} (known: {', '.join(EXPORT_FILES)})")
    if verify_count < 1:
        raise ExportError(f"verification needs at least 1 test digit, got {verify_count}")
    source = None if isinstance(run, Run) else Path(run)
    run = run if isinstance(run, Run) else load_run(run)
    out = Path(out) if out else _default_folder(run, source) / EXPORT_FILES[format]
    model = copy.deepcopy(run.model).float().cpu().eval()
    images = to_float(run.data("exported on").test.images[:verify_count])
    with torch.no_grad():
        expected = model(images)
    metadata = contract(run)
    report = {}

    def write_and_verify(temp: str) -> None:
        try:
            if format == "onnx":
                write_onnx(model, images[:2], temp, metadata)
                found = torch.from_numpy(run_onnx(temp, images))
            else:
                write_torchscript(model, images[:2], temp, metadata)
                with torch.no_grad():
                    found = load_torchscript(temp)(images)
        except (ExportError, OSError):
            raise
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"{format} export failed: {first_line}") from None
        report.update(compare(expected, found, tolerance, format))

    atomic_write(out, write_and_verify)
    return {"path": str(out), "format": format, **report}


def contract(run: Run) -> dict[str, str]:
    """The metadata an exported model carries: what goes in, how it was scaled, what comes out."""

    spec = getattr(run.model, "spec", {"name": type(run.model).__name__, "kwargs": {}})
    about = {
        "digitlab_version": __version__,
        "model": spec["name"],
        "model_kwargs": json.dumps(spec["kwargs"]),
        "dataset": run.dataset,
        "classes": json.dumps(list(run.classes)),
        "input_name": "images",
        "input_shape": "N,1,28,28",
        "input_dtype": "float32",
        "scaling": "pixel / 255: 0 = background, 1 = ink (white ink on black)",
        "preprocessing": "digit fitted into a 20x20 box (aspect ratio kept) and pasted into 28x28 with its "
        "centre of mass at (14, 14), as MNIST; digitlab.images.preprocess.preprocess_image does this",
        "output": "logits (N, classes); softmax gives the class probabilities",
    }
    if run.metrics.get("test_accuracy") is not None:
        about["test_accuracy"] = f"{run.metrics['test_accuracy']:.6f}"
    return about


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: str, metadata: dict[str, str]) -> None:
    """Export to ONNX (dynamic batch axis, opset OPSET) with `metadata` in metadata_props; check the graph."""
    onnx, _ = _onnx_packages()
    buffer = io.BytesIO()
    destination: Any = buffer  # the exporter writes to a file object too; its annotation names only paths
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter still works in torch 2.x
        torch.onnx.export(
            model,
            (example,),
            destination,
            dynamo=False,
            opset_version=OPSET,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "N"}, "logits": {0: "N"}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = "digitlab digit classifier: images (N, 1, 28, 28) float32 in [0, 1] -> logits"
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def run_onnx(path: str | Path, images: torch.Tensor):
    """Logits (N, C) numpy from ONNX Runtime on CPU for float images (N, 1, 28, 28)."""
    _, onnxruntime = _onnx_packages()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})[0]


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, as a dict."""
    onnx, _ = _onnx_packages()
    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


def write_torchscript(model: torch.nn.Module, example: torch.Tensor, path: str, metadata: dict[str, str]) -> None:
    """Trace to TorchScript and save it with `metadata` as the extra file digitlab.json."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still loads everywhere
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, path, _extra_files={"digitlab.json": json.dumps(metadata)})


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """torch.jit.load on the CPU, without its deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def compare(expected: torch.Tensor, found: torch.Tensor, tolerance: float, format: str) -> dict:
    """{count, max_abs_diff, disagreements}; ExportError if the shapes, the logits or any argmax differ."""
    if found.shape != expected.shape:
        raise ExportError(
            f"{format} export gives logits of shape {tuple(found.shape)}, "
            f"PyTorch {tuple(expected.shape)}; nothing written"
        )
    max_diff = (found.float() - expected).abs().max().item()
    disagreements = int((found.argmax(1) != expected.argmax(1)).sum())
    if not max_diff < tolerance or disagreements:
        raise ExportError(
            f"{format} export does not match PyTorch on {len(expected):,} test digits: "
            f"max |logit difference| {max_diff:.3g} (limit {tolerance:g}), "
            f"{disagreements} different predictions; nothing written"
        )
    return {"count": len(expected), "max_abs_diff": max_diff, "disagreements": disagreements}


def _default_folder(run: Run, source: Path | None) -> Path:
    if run.path is not None:
        return Path(run.path)
    if source is not None:
        return source.parent  # a bare model.safetensors: export next to it
    raise ExportError("this run has no folder; pass out= to say where the export goes")


def _onnx_packages():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ExportError(
            "ONNX export needs the onnx and onnxruntime packages: pip install 'digitlab[export]'"
        ) from None
    return onnx, onnxruntime
