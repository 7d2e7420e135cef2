"""A static web page that runs a run's model in the browser: `digitlab export RUN --format web`.

The folder holds index.html, the page's script and style, digitlab's preprocessing in
JavaScript (preprocess.js, the same steps as digitlab.images.preprocess for a drawing on the pad),
model.onnx, and ONNX Runtime Web from the npm package onnxruntime-web. The page loads only
classic scripts, never fetch(), so it works from a static host and from disk (file://, where
Chromium fetches nothing): the ONNX file and Runtime Web's WebAssembly (gzipped) travel as base64
inside two scripts, and Runtime Web's module loader is imported from a blob: URL. For an MLP the
model also answers its hidden layers' activations, which the page shows as rows of cells.

The ONNX graph is verified against PyTorch on real test digits (as `export --format onnx`) and
its operators are checked against the ones ONNX Runtime's CPU kernels (what Runtime Web compiles
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

from ..data.datasets import to_float
from ..data.fetch import Log, NpmPackage, fetch_npm_package
from ..errors import ExportError
from ..models.nets import MLP, count_parameters
from ..runs.run import Run, load_run
from .onnx import OPSET, TOLERANCE, VERIFY_COUNT, _onnx_packages, compare, contract

ORT_WEB = NpmPackage("onnxruntime-web", "1.30.0", "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71")
ORT_SCRIPT = "package/dist/ort.wasm.min.js"  # the WebAssembly-only build, a classic script
ORT_LOADER = "package/dist/ort-wasm-simd-threaded.mjs"
ORT_WASM = "package/dist/ort-wasm-simd-threaded.wasm"
PAGE_FILES = ("index.html", "page.js", "page.css", "preprocess.js")


def export_web(
    run: Run | str | Path,
    out: str | Path | None = None,
    verify_count: int = VERIFY_COUNT,
    tolerance: float = TOLERANCE,
    root: str | Path | None = None,
    log: Log = lambda message: None,
) -> dict:
    """Write a static folder (default RUN/web) whose index.html runs the run's model in the browser;
    return {path, files, bytes, count, max_abs_diff, disagreements, hidden}.

    ONNX Runtime Web comes from the cache under `root` (default ~/.cache/digitlab), fetched with
    `npm pack` and its checksum verified when missing. Raises ExportError, before writing
    anything, for preprocessing the page does not reproduce, an operator Runtime Web cannot run,
    or an export that does not match PyTorch; DataError when Runtime Web cannot be had.
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


class _WithHidden(nn.Module):
    """An MLP that answers its logits and every hidden layer's activations (after the ReLU)."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.mlp = mlp

    def forward(self, images):
        values, hidden = images.flatten(1), []
        for layer in self.mlp.net:
            values = layer(values)
            if isinstance(layer, nn.ReLU):
                hidden.append(values)
        return (values, *hidden)


def verified_onnx(run: Run, verify_count: int, tolerance: float) -> tuple[bytes, list[int], dict]:
    """The model as ONNX bytes (an MLP with its hidden layers as extra outputs hidden0, hidden1, …), the hidden
    widths, and the comparison with PyTorch on `verify_count` test digits; ExportError when they differ."""
    onnx, onnxruntime = _onnx_packages()
    if verify_count < 1:
        raise ExportError(f"verification needs at least 1 test digit, got {verify_count}")
    model = copy.deepcopy(run.model).float().cpu().eval()
    hidden = list(model.hidden) if isinstance(model, MLP) else []
    wrapped = _WithHidden(model) if isinstance(model, MLP) else model
    names = ["logits"] + [f"hidden{index}" for index in range(len(hidden))]
    images = to_float(run.data("exported on").test.images[:verify_count])
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapped,
                (images[:2],),
                buffer,  # type: ignore[arg-type]  # the exporter writes to file objects too
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=names,
                dynamic_axes={name: {0: "N"} for name in ["images", *names]},
            )
        proto = onnx.load_from_string(buffer.getvalue())
        about = contract(run)
        if hidden:
            about["hidden_outputs"] = (
                f"{', '.join(names[1:])}: each hidden layer's activations after its ReLU (N, width)"
            )
        for key, value in about.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        found = session.run(None, {"images": images.numpy()})
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"web export failed: {first_line}") from None
    with torch.no_grad():
        expected = wrapped(images)
    expected = expected if isinstance(expected, tuple) else (expected,)
    report = compare(expected[0], torch.from_numpy(found[0]), tolerance, "web")
    for name, want, got in zip(names[1:], expected[1:], found[1:], strict=True):
        if not (torch.from_numpy(got) - want).abs().max().item() < tolerance:
            raise ExportError(f"web export's {name} does not match PyTorch's hidden activations; nothing written")
    return data, hidden, report


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
    options = run.preprocess
    if options.legacy or options.deskew:
        step = "legacy" if options.legacy else "deskew"
        raise ExportError(
            f"the web page reproduces digitlab's default preprocessing steps (flatten, clean, stroke), "
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
