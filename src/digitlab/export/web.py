"""A static web page that runs a run's model in the browser: `digitlab export RUN --format web`.

The folder holds index.html, the page's script and style, model.onnx, and ONNX Runtime Web from the npm
package onnxruntime-web. The graph takes the pad's gray levels and holds digitlab's drawing path
(digitlab.images.drawing: ink box, pen width, fit to 20 px, centre of mass) in front of the model, so the
page runs one graph and the server and the page prepare a drawing with the same computation. The page loads only
classic scripts, never fetch(), so it works from a static host and from disk (file://, where
Chromium fetches nothing): the ONNX file and Runtime Web's WebAssembly (gzipped) travel as base64
inside two scripts, and Runtime Web's module loader is imported from a blob: URL. For an MLP the
model also answers its hidden layers' activations, which the page shows as rows of cells.

The ONNX graph is verified against PyTorch on the canvas drawings of the real-world suite (the 28×28 it
makes within one gray level, the logits of the model on it, every answer) and its operators are checked against the ones ONNX Runtime's CPU kernels (what Runtime Web compiles
to WebAssembly) implement, before anything is written; the folder is built beside its
destination and renamed into place.
"""

from __future__ import annotations

import base64
import copy
import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..data.fetch import Log, NpmPackage, fetch_npm_package
from ..errors import ExportError
from ..images.drawing import Drawings, drawing_pixels, stack_drawings
from ..images.preprocess import decode_image
from ..inference.realworld import DEFAULT_COUNT, render_suite
from ..models.nets import MLP, count_parameters
from ..runs.run import Run, load_run
from .onnx import OPSET, TOLERANCE, _onnx_packages, compare, contract

ORT_WEB = NpmPackage("onnxruntime-web", "1.30.0", "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71")
ORT_SCRIPT = "package/dist/ort.wasm.min.js"  # the WebAssembly-only build, a classic script
ORT_LOADER = "package/dist/ort-wasm-simd-threaded.mjs"
ORT_WASM = "package/dist/ort-wasm-simd-threaded.wasm"
PAGE_FILES = ("index.html", "page.js", "page.css")
CHUNK = 100  # drawings per verification pass (a 280×280 pad is 300 kB as floats)


def export_web(
    run: Run | str | Path,
    out: str | Path | None = None,
    verify_count: int = DEFAULT_COUNT,
    tolerance: float = TOLERANCE,
    root: str | Path | None = None,
    log: Log = lambda message: None,
) -> dict:
    """Write a static folder (default RUN/web) whose index.html runs the run's model in the browser;
    return {path, files, bytes, count, max_abs_diff, disagreements, hidden}.

    ONNX Runtime Web comes from the cache under `root` (default ~/.cache/digitlab), fetched with
    `npm pack` and its checksum verified when missing. `verify_count` canvas drawings of the real-world
    suite check the graph (by default every one of its test part). Raises ExportError, before writing anything, for preprocessing the page does
    not reproduce, an operator Runtime Web cannot run, or an export that does not match PyTorch;
    DataError when Runtime Web cannot be had.
    """
    source = None if isinstance(run, Run) else Path(run)
    run = run if isinstance(run, Run) else load_run(run)
    _check_preprocessing(run)
    out = Path(out) if out else _default_out(run, source)
    onnx_bytes, hidden, report = verified_onnx(run, verify_count, tolerance)
    check_web_operators(onnx_bytes)
    runtime = _runtime_files(fetch_npm_package(ORT_WEB, root, log))
    files = {
        "model.onnx": onnx_bytes,
        "model.js": _model_script(run, onnx_bytes, hidden),
        **runtime,
        **{name: (resources.files("digitlab.export") / "webpage" / name).read_bytes() for name in PAGE_FILES},
    }
    _write_folder(out, files)
    return {
        "path": str(out),
        "files": sorted(files),
        "bytes": sum(len(data) for data in files.values()),
        "hidden": hidden,
        **report,
    }


class _Page(nn.Module):
    """What the page runs: the pad's gray levels (N, 1, H, W) in [0, 255] through the drawing path and the model;
    answers the logits, the 28×28 the model saw (gray levels) and, for an MLP, every hidden layer's
    activations (after the ReLU)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.drawings, self.model = Drawings(), model

    def forward(self, pads):
        images, _ = self.drawings(pads)
        return self.answers(images)

    def answers(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs for 28×28 gray-level `images` (N, 1, 28, 28): the model part of the graph."""
        values, hidden = images / 255, []
        if not isinstance(self.model, MLP):
            return self.model(values), images
        values = values.flatten(1)
        for layer in self.model.net:
            values = layer(values)
            if isinstance(layer, nn.ReLU):
                hidden.append(values)
        return (values, images, *hidden)


def canvas_drawings(run: Run, count: int) -> torch.Tensor:
    """`count` canvas drawings of the real-world suite (the web page's pad, from test digits) as gray levels
    (count, 1, 280, 280)."""
    test = run.data("exported on").test
    samples = render_suite(test.images, test.labels, count, conditions=("canvas",))
    drawings = [drawing_pixels(decode_image(sample.data, "canvas")) for sample in samples]
    return stack_drawings([drawing for drawing in drawings if drawing is not None])


def verified_onnx(run: Run, verify_count: int, tolerance: float) -> tuple[bytes, list[int], dict]:
    """The page's graph as ONNX bytes (outputs logits, image and, for an MLP, hidden0, hidden1, …), the hidden
    widths, and the comparison with PyTorch on `verify_count` canvas drawings; ExportError when they differ."""
    onnx, onnxruntime = _onnx_packages()
    if verify_count < 1:
        raise ExportError(f"verification needs at least 1 drawing, got {verify_count}")
    model = copy.deepcopy(run.model).float().cpu().eval()
    hidden = list(model.hidden) if isinstance(model, MLP) else []
    page = _Page(model).eval()
    names = ["logits", "image"] + [f"hidden{index}" for index in range(len(hidden))]
    pads = canvas_drawings(run, verify_count)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes read as numbers
            torch.onnx.export(
                page,
                (pads[:2],),
                buffer,  # type: ignore[arg-type]  # the exporter writes to file objects too
                dynamo=False,
                opset_version=OPSET,
                input_names=["pad"],
                output_names=names,
                dynamic_axes={"pad": {0: "N", 2: "H", 3: "W"}, **{name: {0: "N"} for name in names}},
            )
        proto = onnx.load_from_string(buffer.getvalue())
        _constants_as_initializers(proto)
        about = contract(run) | {
            "input": "pad: the drawing's gray levels (N, 1, H, W) float in [0, 255], white ink on black",
            "image_output": "image: the 28×28 the model saw (N, 1, 28, 28) gray levels, all 0 for a blank pad",
        }
        if hidden:
            about["hidden_outputs"] = (
                f"{', '.join(names[2:])}: each hidden layer's activations after its ReLU (N, width)"
            )
        for key, value in about.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        found = [
            [torch.from_numpy(array) for array in session.run(None, {"pad": chunk.numpy()})]
            for chunk in pads.split(CHUNK)
        ]
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"web export failed: {first_line}") from None
    return data, hidden, _agreement(page, pads, [torch.cat(parts) for parts in zip(*found, strict=True)], tolerance)


def _constants_as_initializers(proto) -> None:
    """Move the graph's Constant nodes (the drawing path's shapes and fill values) into its initializers, as ONNX
    Runtime does when it loads a graph, so the graph holds only operators that have kernels."""
    from onnx import numpy_helper

    constants = [node for node in proto.graph.node if node.op_type == "Constant" and node.domain in ("", "ai.onnx")]
    for node in constants:
        (attribute,) = node.attribute
        if attribute.name != "value":  # value_float and the like are not written by torch's exporter
            raise ExportError(f"web export cannot turn a Constant holding {attribute.name} into an initializer")
        proto.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(attribute.t), node.output[0]))
        proto.graph.node.remove(node)


def _agreement(page: _Page, pads: torch.Tensor, found: list[torch.Tensor], tolerance: float) -> dict:
    """The graph's answers (`found`: logits, image, hidden…) held to PyTorch's: the 28×28 within one gray level
    (float sums may round a pixel the other way), the model's logits and hidden layers on the graph's own image
    within `tolerance`, and the same answer as PyTorch's whole path for every drawing."""
    with torch.no_grad():
        expected = [torch.cat(parts) for parts in zip(*(page(chunk) for chunk in pads.split(CHUNK)), strict=True)]
        model_part = page.answers(found[1])  # the model part alone, fed the graph's own 28×28
    if not (found[1] - expected[1]).abs().max().item() <= 1:
        raise ExportError("web export's drawing path does not match PyTorch's; nothing written")
    report = compare(model_part[0], found[0], tolerance, "web")
    for index, (want, got) in enumerate(zip(model_part[2:], found[2:], strict=True)):
        if not (got - want).abs().max().item() < tolerance:
            raise ExportError(f"web export's hidden{index} does not match PyTorch's; nothing written")
    disagreements = int((found[0].argmax(1) != expected[0].argmax(1)).sum())
    if disagreements:
        raise ExportError(f"web export answers {disagreements} drawing(s) differently from PyTorch; nothing written")
    return report


def web_operators() -> set[str]:
    """The ONNX operators (default domain) that ONNX Runtime's CPU kernels implement at opset OPSET:
    Runtime Web's WebAssembly backend is those kernels compiled to WebAssembly."""
    _onnx_packages()  # a clear error when they are missing
    from onnxruntime.capi import _pybind_state

    kernels = getattr(_pybind_state, "get_all_opkernel_def", None)
    if kernels is None:
        raise ExportError("this onnxruntime cannot list its kernels, so the web export cannot check the operators")
    return {
        kernel.op_name
        for kernel in kernels()
        if kernel.provider == "CPUExecutionProvider"
        and kernel.domain in ("", "ai.onnx")
        and kernel.version_range[0] <= OPSET <= kernel.version_range[1]
    }


def check_web_operators(onnx_bytes: bytes, supported: set[str] | None = None) -> None:
    """ExportError naming every operator of the graph that ONNX Runtime Web's WebAssembly backend cannot run."""
    onnx, _ = _onnx_packages()
    supported = web_operators() if supported is None else supported
    graph = onnx.load_from_string(onnx_bytes).graph
    missing = sorted(
        {
            f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            for node in graph.node
            if node.domain not in ("", "ai.onnx") or node.op_type not in supported
        }
    )
    if missing:
        raise ExportError(
            f"ONNX Runtime Web's WebAssembly backend cannot run operator(s) {', '.join(missing)} "
            f"(opset {OPSET}); nothing written"
        )


def _check_preprocessing(run: Run) -> None:
    """The page carries the drawing path, which is what the server runs for a drawing unless the run wants the
    legacy pipeline, deskewed digits or its strokes left as they came."""
    options = run.preprocess
    if options.legacy or options.deskew or not options.stroke:
        step = "legacy" if options.legacy else "deskew" if options.deskew else "no-stroke"
        raise ExportError(
            f"the web page reproduces digitlab's drawing path (default preprocessing), "
            f"not '{step}', which this run uses; nothing written"
        )


def _runtime_files(tarball: Path) -> dict[str, bytes]:
    """ort.wasm.min.js as shipped, and ort-wasm.js: the module loader's text and the gzipped WebAssembly in base64."""
    try:
        with tarfile.open(tarball) as archive:
            script, loader, wasm = (_member(archive, name) for name in (ORT_SCRIPT, ORT_LOADER, ORT_WASM))
    except (OSError, tarfile.TarError) as error:
        raise ExportError(f"cannot read {tarball}: {error}; delete it and export again") from None
    packed = base64.b64encode(gzip.compress(wasm, compresslevel=9, mtime=0)).decode("ascii")
    assets = {"version": ORT_WEB.version, "loader": loader.decode("utf-8"), "wasmGzipBase64": packed}
    return {"ort.wasm.min.js": script, "ort-wasm.js": _script("digitlabRuntime", assets)}


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    try:
        member = archive.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise ExportError(f"{ORT_WEB.spec} has no {name.removeprefix('package/')}")
    with member:
        return member.read()


def _model_script(run: Run, onnx_bytes: bytes, hidden: list[int]) -> bytes:
    spec = getattr(run.model, "spec", {"name": type(run.model).__name__, "kwargs": {}})
    about = {
        "name": spec["name"],
        "parameters": count_parameters(run.model),
        "testAccuracy": run.metrics.get("test_accuracy"),
        "classes": [str(name) for name in run.classes],
        "hidden": hidden,
        "preprocess": run.preprocess.to_dict(),
        "onnxBase64": base64.b64encode(onnx_bytes).decode("ascii"),
    }
    return _script("digitlabModel", about)


def _script(name: str, value: dict) -> bytes:
    return f'"use strict";\nconst {name} = {json.dumps(value)};\n'.encode()


def _default_out(run: Run, source: Path | None) -> Path:
    if run.path is not None:
        return Path(run.path) / "web"
    if source is not None:
        return source.parent / "web"
    raise ExportError("this run has no folder; pass out= to say where the web page goes")


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """Build the folder beside `out` and rename it into place; an existing `out` is replaced only once
    the new one is complete, and a file that is in the way is refused."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; nothing written")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as error:
        raise ExportError(f"cannot write {out}: {error.strerror}") from None
    old = out.parent / f"{building.name}.old"
    try:
        for name, data in files.items():
            (building / name).write_bytes(data)
        os.chmod(building, 0o755)
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(building, out)
        except OSError:
            if old.exists():
                os.replace(old, out)  # put the previous page back
            raise
    except OSError as error:
        raise ExportError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
