"""The web demo: draw a digit in the browser and watch the model decide, served by FastAPI under uvicorn.

`create_app(run)` loads the model once and returns the app: the page (static/index.html with its
CSS and script), `POST /api/predict` (an image upload, or JSON with a base64 image), `POST /api/number`
(the same, read as a number of several digits), `POST /api/explain` (the same, with what the model
computes inside: see serveexplain), `GET /api/model`, `GET /api/models`, `GET /api/weights`,
`GET /healthz` and the OpenAPI docs at /docs. Several runs may be served at once; every model route
takes `?model=NAME` (default: the first). Uploads go through the same guards and the same
preprocessing as `digitlab predict` (preprocess.decode_image, predict.predict); decoding and the
preprocessing run in worker threads so the event loop keeps answering other requests, and the
forward passes of /api/predict requests that arrive together are batched into one (digitlab.serving.batching).
`Limits` bounds what one upload may be (bytes, megapixels, seconds to arrive) and how many are decoded
at once: the rest wait in a short queue, and a request that finds the queue full gets 503 with
Retry-After. `serve(..., workers=N)` runs N server processes on one listening socket.

The module runs past 300 lines on purpose: the app, its request and answer models and the
listener that reports a taken port are read together, following one request through one file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import functools
import json
import math
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..errors import ImageError, ImageTooLarge, ServeError
from ..images.preprocess import MAX_PIXELS, Preprocessed, decode_image, megapixels, prepare
from ..inference.predict import Prediction, classify_prepared, predict
from ..models.nets import count_parameters
from ..runs.run import Run
from ..version import __version__
from .batching import Busy, Gate, MicroBatcher
from .explain import EXPLAIN_DOC, ExplanationOut, ServedModels, WeightsOut, explained, target_indices
from .workers import run_workers

STATIC = Path(__file__).parent / "static"
ENVELOPE_BYTES = 64 * 1024  # room for multipart headers, a data-URL prefix and line breaks around the image
RETRY_AFTER_S = 2  # what a 503 tells the client to wait
TARGETS = Query(default=[], description='also attribute to these classes ("why not a 3?")')
USAGE = 'send an image file as multipart/form-data (field "file") or JSON {"image": "<base64 PNG>"}'


@dataclass(frozen=True)
class Limits:
    """What the server accepts and how much it does at once (defaults fit phone photos)."""

    max_upload_bytes: int = 25 * 1000 * 1000  # an image file, or the bytes a base64 string decodes to: 25 MB
    max_pixels: int = MAX_PIXELS  # judged from the header, before any pixel is decoded: 100 megapixels
    max_decoding: int = 2  # images decoded and classified at once (each one's memory is bounded by the decoder)
    max_queued: int = 16  # requests waiting for a decoding slot; one more gets 503
    body_timeout_s: float = 30.0  # a request body must arrive within this many seconds, or 408
    max_batch: int = 64  # /api/predict images classified in one forward pass at most
    max_wait_ms: float = 2.0  # how long a forward pass waits for more requests to join its batch

    def __post_init__(self):
        smallest = min(self.max_upload_bytes, self.max_pixels, self.max_decoding, self.max_batch)
        if smallest < 1 or self.max_queued < 0 or self.body_timeout_s <= 0 or self.max_wait_ms < 0:
            raise ServeError(f"limits must be positive (the queue and the batch wait may be 0): {self}")

    @property
    def upload(self) -> str:
        """The byte limit as a person reads it: '25 MB'."""
        return f"{self.max_upload_bytes / 1e6:.3g} MB"

    def body_limit(self, kind: str) -> int:
        """The most bytes a request body of `kind` may hold: base64 is 4 characters per 3 bytes."""
        image = 4 * math.ceil(self.max_upload_bytes / 3) if kind == "application/json" else self.max_upload_bytes
        return image + ENVELOPE_BYTES


class Health(BaseModel):
    status: str


class ModelInfo(BaseModel):
    run: str | None = Field(description="run folder name (null for a bare model file)")
    model: str
    model_kwargs: dict
    parameters: int
    test_accuracy: float | None
    val_accuracy: float | None
    epochs: int | None
    dataset: str
    classes: list[str]
    config: dict


class ServedModelInfo(ModelInfo):
    name: str = Field(description="what ?model= calls it")


class ModelsOut(BaseModel):
    default: str = Field(description="the model a request without ?model= gets")
    models: list[ServedModelInfo]


class PredictionOut(BaseModel):
    label: str = Field(description="the most likely class")
    index: int = Field(description="its position in the class list")
    confidence: float = Field(description="its probability")
    probabilities: list[float] = Field(description="softmax over the classes, in class order; sums to 1")
    image: list[list[int]] = Field(
        description="the 28×28 image the model saw: rows of gray levels, 0 background, 255 ink"
    )
    box: list[int] = Field(
        description="where the ink was found: [x0, y0, x1, y1] in the picture's own pixels "
        "(EXIF rotation applied; x1, y1 exclusive)"
    )
    ood_score: float | None = Field(
        description="how unlike a digit the picture is (higher: less); "
        "null for a model without a 'not a digit' detector"
    )
    rejected: bool | None = Field(
        description="true when the score is above the model's threshold: "
        "this does not look like a digit (null without a detector)"
    )


class DigitOut(BaseModel):
    label: str = Field(description="the digit read")
    confidence: float = Field(description="its probability")
    box: list[int] = Field(description="where its ink is in the picture: x0, y0, x1, y1 (x1, y1 exclusive)")


class NumberOut(BaseModel):
    number: str = Field(description="the digits read, left to right")
    confidence: float = Field(description="the product of the digits' probabilities")
    digits: list[DigitOut]


class ErrorOut(BaseModel):
    error: str


def create_app(run_or_path=None, limits: Limits = Limits(), device: str | torch.device = "cpu") -> FastAPI:
    """The FastAPI app serving `run_or_path` (a Run, a run folder or a model.safetensors, loaded onto `device`;
    None: the shipped model; or a list of them, the first being the default) within `limits`.

    The models are loaded here, once; a missing or corrupt run raises RunError before any server
    starts. Every error response is JSON {"error": message} with a 4xx status (503 when busy, 5xx
    otherwise only for bugs).
    """
    served = ServedModels(run_or_path, device)
    run = served.runs[served.default]
    gate = Gate(limits.max_decoding, limits.max_queued, RETRY_AFTER_S)
    batchers = {  # one forward-pass queue per served model
        name: MicroBatcher(functools.partial(classify_batch, each), limits.max_batch, limits.max_wait_ms / 1000)
        for name, each in served.runs.items()
    }
    batcher = batchers[served.default]
    about = model_info(run)
    # FastAPIOffline: FastAPI whose /docs and /redoc use bundled Swagger UI and ReDoc files, not a CDN
    app = FastAPIOffline(
        title="digitlab",
        version=__version__,
        summary="Classify pictures of handwritten digits "
        f"with a trained digitlab model ({about['model']}, {about['parameters']:,} parameters).",
    )
    app.state.run, app.state.model_info, app.state.limits = run, about, limits
    app.state.served, app.state.batcher, app.state.gate = served, batcher, gate
    # Starlette picks the handler by exception class; its stubs type every handler for any Exception
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Busy, _busy)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _server_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/healthz", summary="Liveness check", response_model=Health)
    async def healthz():
        return {"status": "ok"}

    @app.get("/api/model", summary="A served run's model and metrics", response_model=ModelInfo)
    async def model(model: str | None = None):
        return model_info(served.pick(model)[1])

    @app.get("/api/models", summary="Every served model, by the name ?model= takes", response_model=ModelsOut)
    async def models():
        return {"default": served.default, "models": [{"name": n, **model_info(r)} for n, r in served.runs.items()]}

    @app.get(
        "/api/weights",
        summary="What a model's first layer looks for: an MLP's units as 28×28 images, or conv filters",
        response_model=WeightsOut,
        responses={404: {"model": ErrorOut, "description": "no such model, or one without a first-layer picture"}},
    )
    async def weights(request: Request, model: str | None = None):
        return served.weights(model, request.headers.get("if-none-match"))

    @app.post(
        "/api/predict",
        summary="Classify one picture of a digit",
        response_model=PredictionOut,
        responses=_error_responses(limits, "not an image, corrupt or blank"),
        openapi_extra={"requestBody": _request_body_schema(limits)},
    )
    async def predict_route(request: Request, model: str | None = None):
        name, picked = served.pick(model)
        # prepare_upload is looked up per request (not bound once), so a test can stand in for it
        prepare = lambda data, source, limits: prepare_upload(picked, data, source, limits)  # noqa: E731
        return JSONResponse(await _through_gate(gate, limits, request, prepare, batchers[name].submit))

    @app.post(
        "/api/number",
        summary="Read a whole number (several digits, left to right) in one picture",
        response_model=NumberOut,
        responses=_error_responses(limits, "not an image, corrupt, no digit found, or more than 32 digits"),
        openapi_extra={"requestBody": _request_body_schema(limits)},
    )
    async def number_route(request: Request, model: str | None = None):
        work = functools.partial(read_upload, served.pick(model)[1])
        return JSONResponse(await _through_gate(gate, limits, request, work))

    @app.post(
        "/api/explain",
        summary="Classify one picture and show what the model computes inside: hidden layers, saliency, top 3",
        description=EXPLAIN_DOC,
        response_model=ExplanationOut,
        responses=_error_responses(limits, "not an image, corrupt or blank, or an unknown target class"),
        openapi_extra={"requestBody": _request_body_schema(limits)},
    )
    async def explain_route(
        request: Request,
        model: str | None = None,
        target: list[str] = TARGETS,
    ):
        name, picked = served.pick(model)
        targets = target_indices(picked, target)

        def work(data: bytes, source: str, limits: Limits) -> dict:
            return explained(name, picked, answer(picked, data, source, limits), targets)

        # built by `explained` to match ExplanationOut; sent as is, since revalidating thousands of numbers costs CPU
        return JSONResponse(await _through_gate(gate, limits, request, work))

    return app


def _error_responses(limits: Limits, unusable: str) -> dict:
    """The OpenAPI description of a picture route's error answers; `unusable` says what earns a 422."""
    return {
        code: {"model": ErrorOut, "description": text}
        for code, text in (
            (400, "malformed JSON, bad base64 or a form without a file"),
            (400, "malformed JSON, bad base64 or a form without a file"),
            (404, "no served model has the ?model= name"),
            (408, f"the body took more than {limits.body_timeout_s:g} s to arrive"),
            (413, f"more than {limits.upload} or {megapixels(limits.max_pixels)}"),
            (415, "neither JSON nor multipart/form-data"),
            (422, unusable),
            (503, "too many images waiting: retry after the Retry-After seconds"),
        )
    }


async def _through_gate(gate: Gate, limits: Limits, request: Request, work, then=None):
    """Take a place in the queue before reading the body (so memory stays bounded), wait for a turn, then
    run work(data, source, limits) in a worker thread (too large is 413, unusable 422); `then`, when given,
    is awaited on its result with the place still held (the batched forward pass)."""
    async with gate.ticket():
        data, source = await image_bytes(request, limits)
        async with gate.turns:
            try:
                result = await run_in_threadpool(work, data, source, limits)
            except ImageTooLarge as error:
                raise HTTPException(413, str(error)) from None
            except ImageError as error:
                raise HTTPException(422, str(error)) from None
        return result if then is None else await then(result)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)


async def _busy(request: Request, error: Busy) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=503, headers={"Retry-After": str(error.retry_after_s)})


async def _server_error(request: Request, error: Exception) -> JSONResponse:
    """A bug: a JSON 500 that names the exception type, never a traceback."""
    return JSONResponse({"error": f"internal error ({type(error).__name__})"}, status_code=500)


def read_upload(run: Run, data: bytes, source: str, limits: Limits = Limits()) -> dict:
    """Decode `data` with the upload guards and read the number in it: {number, confidence, digits}."""
    image = decode_image(data, source, max_pixels=limits.max_pixels, max_bytes=limits.max_upload_bytes)
    try:
        (reading,) = run.read_number([image])
    except ImageError as error:
        raise ImageError(error.problem, source) from None
    answer = reading.to_dict()
    del answer["file"]
    return answer


def model_info(run: Run) -> dict:
    """What GET /api/model returns: the model, its size, its accuracy and how it was trained."""
    metrics = run.metrics or {}
    return {
        "run": run.path.name if run.path else None,
        "model": run.config.model,
        "model_kwargs": run.config.model_kwargs,
        "parameters": count_parameters(run.model),
        "test_accuracy": metrics.get("test_accuracy"),
        "val_accuracy": metrics.get("val_accuracy"),
        "epochs": len(metrics["history"]) if "history" in metrics else None,
        "dataset": run.dataset,
        "classes": [str(name) for name in run.classes],
        "config": run.config.to_dict(),
    }


def classify(run: Run, data: bytes, source: str, limits: Limits = Limits()) -> Prediction:
    """Decode `data` with the upload guards, preprocess it as `digitlab predict` does, and classify it."""
    image = decode_image(data, source, max_pixels=limits.max_pixels, max_bytes=limits.max_upload_bytes)
    try:
        return predict(run.model, [image], run.classes, options=run.preprocess)[0]
    except ImageError as error:
        raise ImageError(error.problem, source) from None


def answer(run: Run, data: bytes, source: str, limits: Limits = Limits()) -> dict:
    """classify, then the JSON answer (see `answer_of`): what /api/predict answers, unbatched."""
    return answer_of(classify(run, data, source, limits))


def prepare_upload(run: Run, data: bytes, source: str, limits: Limits = Limits()) -> tuple[str, Preprocessed]:
    """Decode `data` with the upload guards and prepare it as `digitlab predict` does: (source, the 28×28 and its
    box), ready for `classify_batch`. The first half of `classify`, run per request in a worker thread."""
    image = decode_image(data, source, max_pixels=limits.max_pixels, max_bytes=limits.max_upload_bytes)
    try:
        return source, prepare(image, run.preprocess)
    except ImageError as error:
        raise ImageError(error.problem, source) from None


def classify_batch(run: Run, prepared: list[tuple[str, Preprocessed]]) -> list[dict]:
    """The JSON answers for prepared uploads, classified in one forward pass (the second half of `answer`).

    Runs in the micro-batcher's thread, the list-building included, so the event loop only moves bytes.
    """
    images = torch.stack([picture.image for _, picture in prepared])
    results = [Prediction(source, box=picture.box) for source, picture in prepared]
    return [answer_of(result) for result in classify_prepared(run.model, images, results, run.classes)]


def answer_of(result: Prediction) -> dict:
    """The JSON answer for one prediction: label, confidence, probabilities, the 28×28 the model saw (0-255 rows),
    the box it came from in the picture, and the out-of-distribution score and verdict (`rejected`: not a digit)."""
    assert result.image is not None  # an unusable image raises ImageError before it is classified
    return {
        "label": result.label,
        "index": result.index,
        "confidence": result.confidence,
        "probabilities": result.probabilities,
        "image": result.image[0].numpy().tolist(),
        "box": list(result.box or ()),
        "ood_score": result.ood_score,
        "rejected": result.rejected,
    }


async def image_bytes(request: Request, limits: Limits = Limits()) -> tuple[bytes, str]:
    """The image's bytes and a name for messages, from a multipart upload or a JSON base64 string.

    The body is capped while it streams in (Content-Length is checked first), so an oversized
    upload is refused before it is held in memory, let alone decoded; and it must have arrived within
    `limits.body_timeout_s`, so a client that trickles it in cannot hold a place for ever (408).
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", "multipart/form-data"):
        raise HTTPException(415, f"unsupported content type {kind or 'none'!r}: {USAGE}")
    limit = limits.body_limit(kind)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, _too_large("request", int(declared), limits))
    capped = Request(request.scope, _capped_receive(request.receive, limit, limits.body_timeout_s))
    try:
        if kind == "application/json":
            return _from_json(await capped.body(), limits)
        return await _from_form(capped, limits)
    except _BodyTooLarge:
        raise HTTPException(413, _too_large("request", limit, limits, exact=False)) from None
    except _BodyTooSlow:
        raise HTTPException(
            408, f"the request body did not arrive within {limits.body_timeout_s:g} s", headers={"Connection": "close"}
        ) from None


def _from_json(body: bytes, limits: Limits) -> tuple[bytes, str]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HTTPException(400, f"malformed JSON ({error})") from None
    if not isinstance(value, dict) or not isinstance(value.get("image"), str):
        raise HTTPException(400, f'expected a JSON object with an "image" string: {USAGE}')
    text = value["image"]
    if text.startswith("data:"):  # a data URL, as canvas.toDataURL() makes
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise HTTPException(400, f'"image" is not valid base64 ({error})') from None
    if len(data) > limits.max_upload_bytes:
        raise HTTPException(413, _too_large("image", len(data), limits))
    return data, str(value.get("name") or "image")[:100]


async def _from_form(request: Request, limits: Limits) -> tuple[bytes, str]:
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, f'the form has no file in its "file" field: {USAGE}')
        data = await upload.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, _too_large("image", limits.max_upload_bytes, limits, exact=False))
        return data, Path(upload.filename or "upload").name[:100] or "upload"


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


def _capped_receive(receive, limit: int, timeout_s: float):
    """Wrap an ASGI `receive` so that the body raises _BodyTooLarge once it passes `limit` bytes, and
    _BodyTooSlow when it has not all arrived `timeout_s` seconds after the first read."""
    seen, deadline = 0, None

    async def capped():
        nonlocal seen, deadline
        loop = asyncio.get_running_loop()
        deadline = deadline or loop.time() + timeout_s
        try:
            message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
        except TimeoutError:
            raise _BodyTooSlow() from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge()
        return message

    return capped


def _too_large(what: str, size: int, limits: Limits, exact: bool = True) -> str:
    amount = f"{size:,} bytes" if exact else f"more than {size:,} bytes"
    return f"{what} is {amount}; images are limited to {limits.max_upload_bytes:,} bytes ({limits.upload})"


def serve(
    run=None,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = False,
    on_ready=print,
    limits: Limits = Limits(),
    workers: int = 1,
    threads: int = 1,
    device: str | torch.device = "cpu",
) -> None:
    """Load the run (or list of runs) onto `device`, listen on host:port (0 = any free port) and serve the demo until Ctrl-C
    or SIGTERM.

    The socket is bound before uvicorn starts, so a taken port or an unknown host is a ServeError
    (one line) rather than a log full of tracebacks. `on_ready(message)` receives the URL line.
    `workers` > 1 runs that many server processes on the socket (digitlab.serving.workers), each with its own
    copy of the model and its own limits; `run` must then be a path (or a Run loaded from one) or None,
    since each process loads it again. `threads` is torch's thread count per process for the forward pass:
    1 by default, since the cores are busy decoding other requests, and a second thread spinning beside
    them cost more CPU than it saved (benchmarks/serve_profile.py).
    """
    if not 0 <= port <= 65535:
        raise ServeError(f"port must be between 0 and 65535, got {port}")
    if workers < 1 or threads < 1:
        raise ServeError(f"workers and threads must be at least 1, got {workers} and {threads}")
    if workers > 1 and isinstance(run, Run) and run.path is None:
        raise ServeError("several workers load the model themselves: give a run folder or model file, not a Run")
    app = create_app(run, limits, device)
    listener = _listen(host, port)
    bound_port = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    models = ", ".join(
        f"{name} ({each.config.model}, {count_parameters(each.model):,} parameters)"
        for name, each in app.state.served.runs.items()
    )
    on_ready(
        f"serving {models} on http://{shown}:{bound_port}{f' with {workers} workers' if workers > 1 else ''}"
        " — Ctrl-C to stop"
    )
    try:
        if workers == 1:
            torch.set_num_threads(threads)
            _run_uvicorn(app, listener, access_log)
        else:
            del app  # each worker loads its own
            runs = run if isinstance(run, (list, tuple)) else [run]
            paths = [each.path if isinstance(each, Run) else each for each in runs]
            run_workers(workers, _serve_worker, (listener, paths, limits, access_log, threads, device))
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a normal stop
        pass
    finally:
        listener.close()


def _run_uvicorn(app: FastAPI, listener: socket.socket, access_log: bool) -> None:
    config = uvicorn.Config(
        app, access_log=access_log, log_level="info" if access_log else "warning", timeout_graceful_shutdown=5
    )
    uvicorn.Server(config).run(sockets=[listener])


def _serve_worker(
    listener: socket.socket, run: list, limits: Limits, access_log: bool, threads: int, device: str | torch.device
):
    """One of several server processes (see digitlab.serving.workers): its own model and app on the shared socket."""
    torch.set_num_threads(threads)
    _run_uvicorn(create_app(run, limits, device), listener, access_log)


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ServeError(f"cannot listen on {host}:{port}: unknown host ({error.strerror})") from None
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart without waiting
        listener.bind(address)
        listener.listen(2048)
    except OSError as error:
        listener.close()
        problem = "the port is already in use" if error.errno == errno.EADDRINUSE else error.strerror or str(error)
        raise ServeError(f"cannot listen on {host}:{port}: {problem}") from None
    return listener


def _request_body_schema(limits: Limits) -> dict:
    """The two accepted request bodies, for the OpenAPI docs (the route reads the body itself)."""
    most = f"at most {limits.upload} and {megapixels(limits.max_pixels)}"
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"image file (JPEG, PNG, HEIC, WebP...), {most}",
                        }
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "description": "base64 image (PNG, JPEG, ...), or a data: URL"},
                        "name": {"type": "string", "description": "optional name used in error messages"},
                    },
                }
            },
        },
    }
