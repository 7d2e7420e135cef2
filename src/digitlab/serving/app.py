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
`Limits` (digitlab.serving.limits) bounds what one upload may be (bytes, megapixels, decoding memory,
JSON shape, seconds to arrive) and how many are decoded at once: a request takes a place in a short,
fairly shared queue only once its whole body is in hand and its header has been checked (digitlab.serving.body),
and one that finds the queue full gets 503 with Retry-After. The Host allow-list, the optional bearer token and
the security headers are digitlab.serving.guard; the connection-level limits digitlab.serving.protocol.
`serve(..., workers=N)` runs N server processes on one listening socket.

The module runs past 300 lines on purpose: the app, its request and answer models and the
listener that reports a taken port are read together, following one request through one file.
"""

from __future__ import annotations

import errno
import functools
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ..errors import ImageError, ImageTooLarge, ServeError
from ..images.preprocess import (
    Drawing,
    Preprocessed,
    as_drawing,
    decode_image,
    inspect_image,
    megapixels,
    prepare,
    prepare_drawings,
)
from ..inference.predict import Prediction, classify_prepared, predict
from ..models.nets import count_parameters
from ..runs.run import Run
from ..version import __version__
from .batching import Busy, Gate, MicroBatcher
from .body import RETRY_AFTER_S, BodyMemory, client_of, give_memory_back, received, tune_malloc
from .explain import EXPLAIN_DOC, ExplanationOut, ServedModels, WeightsOut, explained, target_indices
from .guard import LOOPBACK_HOSTS, WILDCARD_ADDRESSES, Guard, allowed_hosts
from .limits import Limits
from .protocol import uvicorn_config
from .workers import run_workers

STATIC = Path(__file__).parent / "static"
TARGETS = Query(default=[], description='also attribute to these classes ("why not a 3?")')
TRIM_AFTER_BYTES = 36_000_000  # a decoding estimated to hold more than this (a big picture's) gives memory back
PATH_SETTINGS = ("out", "teacher")  # training settings that hold a local path: served as the folder's name only
__all__ = ["Limits", "create_app", "serve"]  # Limits lives in digitlab.serving.limits; served from here too


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
    reason: str | None = Field(description="why it is not taken for a digit (null when it is)")


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


def create_app(
    run_or_path=None,
    limits: Limits = Limits(),
    device: str | torch.device = "cpu",
    hosts: Iterable[str] | None = LOOPBACK_HOSTS,
    token: str | None = None,
    any_address: bool = False,
) -> FastAPI:
    """The FastAPI app serving `run_or_path` (a Run, a run folder or a model.safetensors, loaded onto `device`;
    None: the shipped model; or a list of them, the first being the default) within `limits`.

    The models are loaded here, once; a missing or corrupt run raises RunError before any server
    starts. Every error response is JSON {"error": message} with a 4xx status (503 when busy, 5xx
    otherwise only for bugs). Requests must name one of `hosts` as their Host (None: any; `any_address`: also
    any address typed as digits), and /api/ routes want `Authorization: Bearer TOKEN` when `token` is given
    (see digitlab.serving.guard).
    """
    served = ServedModels(run_or_path, device)
    run = served.runs[served.default]
    gate = Gate(limits.max_decoding, limits.max_queued, RETRY_AFTER_S, budget=limits.max_decode_bytes)
    memory = BodyMemory(limits.max_body_memory_bytes)
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
    app.state.served, app.state.batcher, app.state.gate, app.state.body_memory = served, batcher, gate, memory
    app.add_middleware(
        Guard,
        hosts=None if hosts is None else frozenset(hosts),
        token=token,
        any_address=any_address,
        max_header_bytes=limits.max_header_bytes,
    )
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
        return JSONResponse(await _through_gate(app, request, prepare, functools.partial(_batched, batchers[name])))

    @app.post(
        "/api/number",
        summary="Read a whole number (several digits, left to right) in one picture",
        response_model=NumberOut,
        responses=_error_responses(limits, "not an image, corrupt, no digit found, or more than 32 digits"),
        openapi_extra={"requestBody": _request_body_schema(limits)},
    )
    async def number_route(request: Request, model: str | None = None):
        work = functools.partial(read_upload, served.pick(model)[1])
        return JSONResponse(await _through_gate(app, request, work))

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
        return JSONResponse(await _through_gate(app, request, work))

    return app


def _error_responses(limits: Limits, unusable: str) -> dict:
    """The OpenAPI description of a picture route's error answers; `unusable` says what earns a 422."""
    return {
        code: {"model": ErrorOut, "description": text}
        for code, text in (
            (400, "malformed JSON (or deeper, longer or with more keys than the limits), bad base64, no file"),
            (401, "the server has a token and the request did not bring it"),
            (404, "no served model has the ?model= name"),
            (408, f"the body took more than {limits.body_timeout_s:g} s to arrive"),
            (
                413,
                f"more than {limits.upload} or {megapixels(limits.max_pixels)}, or more than "
                f"{limits.max_decode_bytes / 1e6:,.0f} MB to decode",
            ),
            (415, "neither JSON nor multipart/form-data"),
            (422, unusable),
            (503, "too many images waiting, or bodies in memory: retry after the Retry-After seconds"),
        )
    }


async def _through_gate(app: FastAPI, request: Request, work, then=None):
    """Read the whole body (digitlab.serving.body), check the image's header off the event loop (too large is 413,
    unusable 422: no place is taken for those), then take a place in the queue, wait for a turn whose decoding
    memory fits, and run work(data, source, limits) in a worker thread; `then`, when given, is awaited on its
    result with the place still held (the batched forward pass)."""
    gate, limits = app.state.gate, app.state.limits
    async with received(request, limits, app.state.body_memory) as (data, source):
        cost = await _image_work(
            inspect_image, data, source, limits.max_pixels, limits.max_upload_bytes, limits.max_decode_bytes
        )
        async with gate.ticket(client_of(request)) as ticket:
            async with gate.turn(ticket, cost.bytes):
                try:
                    result = await _image_work(work, data, source, limits)
                finally:
                    if cost.bytes > TRIM_AFTER_BYTES:
                        await run_in_threadpool(give_memory_back)
            return result if then is None else await then(result)


async def _batched(batcher: MicroBatcher, item):
    """The item's answer from its micro-batch; a drawing the batch found blank is answered 422."""
    answer = await batcher.submit(item)
    if isinstance(answer, ImageError):
        raise HTTPException(422, str(answer))
    return answer


async def _image_work(function: Callable, *arguments):
    """function(*arguments) in a worker thread, its ImageTooLarge answered 413 and other ImageErrors 422."""
    try:
        return await run_in_threadpool(function, *arguments)
    except ImageTooLarge as error:
        raise HTTPException(413, str(error)) from None
    except ImageError as error:
        raise HTTPException(422, str(error)) from None


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)


async def _busy(request: Request, error: Busy) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=503, headers={"Retry-After": str(error.retry_after_s)})


async def _server_error(request: Request, error: Exception) -> JSONResponse:
    """A bug: a JSON 500 that names the exception type, never a traceback."""
    return JSONResponse({"error": f"internal error ({type(error).__name__})"}, status_code=500)


def read_upload(run: Run, data: bytes, source: str, limits: Limits = Limits()) -> dict:
    """Decode `data` with the upload guards and read the number in it: {number, confidence, digits}."""
    image = _decoded(data, source, limits)
    try:
        (reading,) = run.read_number([image])
    except ImageError as error:
        raise ImageError(error.problem, source) from None
    answer = reading.to_dict()
    del answer["file"]
    return answer


def _decoded(data: bytes, source: str, limits: Limits):
    return decode_image(data, source, limits.max_pixels, limits.max_upload_bytes, limits.max_decode_bytes)


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
        "config": _without_paths(run.config.to_dict()),
    }


def _without_paths(config: dict) -> dict:
    """The training settings with each local path cut to its last part (the run's name, not the home folder)."""
    return {key: Path(value).name if key in PATH_SETTINGS and value else value for key, value in config.items()}


def classify(run: Run, data: bytes, source: str, limits: Limits = Limits()) -> Prediction:
    """Decode `data` with the upload guards, preprocess it as `digitlab predict` does, and classify it."""
    image = _decoded(data, source, limits)
    try:
        return predict(run.model, [image], run.classes, options=run.preprocess)[0]
    except ImageError as error:
        raise ImageError(error.problem, source) from None


def answer(run: Run, data: bytes, source: str, limits: Limits = Limits()) -> dict:
    """classify, then the JSON answer (see `answer_of`): what /api/predict answers, unbatched."""
    return answer_of(classify(run, data, source, limits))


def prepare_upload(run: Run, data: bytes, source: str, limits: Limits = Limits()) -> tuple[str, Preprocessed | Drawing]:
    """Decode `data` with the upload guards and prepare it as `digitlab predict` does: (source, the 28×28 and its
    box), ready for `classify_batch`; a drawing is only recognised here, and prepared with the rest of its batch
    there. The first half of `classify`, run per request in a worker thread."""
    image = _decoded(data, source, limits)
    drawing = as_drawing(image, run.preprocess)
    if drawing is not None:
        return source, drawing
    try:
        return source, prepare(image, run.preprocess)
    except ImageError as error:
        raise ImageError(error.problem, source) from None


def classify_batch(run: Run, prepared: list[tuple[str, Preprocessed | Drawing]]) -> list[dict | ImageError]:
    """The JSON answers for prepared uploads, the drawings among them prepared together (the drawing path on the
    whole batch) and all classified in one forward pass (the second half of `answer`); an ImageError in place of
    the answer of a drawing found blank.

    Runs in the micro-batcher's thread, the list-building included, so the event loop only moves bytes.
    """
    pictures: list = [picture for _, picture in prepared]  # each a Preprocessed, a Drawing, or None once blank
    drawn = [index for index, picture in enumerate(pictures) if isinstance(picture, Drawing)]
    if drawn:
        for index, picture in zip(drawn, prepare_drawings([pictures[i] for i in drawn], run.preprocess), strict=True):
            pictures[index] = picture
    answers: list[dict | ImageError] = [ImageError("no ink found (blank image)", source) for source, _ in prepared]
    ready = [index for index, picture in enumerate(pictures) if picture is not None]
    if ready:
        images = torch.stack([pictures[index].image for index in ready])
        results = [Prediction.of(prepared[index][0], pictures[index]) for index in ready]
        for index, result in zip(ready, classify_prepared(run.model, images, results, run.classes), strict=True):
            answers[index] = answer_of(result)
    return answers


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
        "reason": result.rejection,
    }


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
    token: str | None = None,
    hosts: Sequence[str] = (),
    on_warning: Callable[[str], object] = lambda message: print(message, file=sys.stderr, flush=True),
) -> None:
    """Load the run (or list of runs) onto `device`, listen on host:port (0 = any free port) and serve the demo until Ctrl-C
    or SIGTERM.

    The socket is bound before uvicorn starts, so a taken port or an unknown host is a ServeError
    (one line) rather than a log full of tracebacks. `on_ready(message)` receives the URL line, and
    `on_warning(message)` a warning when `host` reaches beyond this machine (see `exposure_warning`).
    Requests must name loopback, `host` or one of `hosts` as their Host ('*': any); with a `token`, /api/
    routes want it as a bearer token (digitlab.serving.guard).
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
    if token is not None and not token.strip():
        raise ServeError("the token must not be empty")
    guard = Guarding(allowed_hosts(host, hosts), token, host in WILDCARD_ADDRESSES)
    app = create_app(run, limits, device, guard.hosts, guard.token, guard.any_address)
    listener = _listen(host, port)
    bound_port = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    models = ", ".join(
        f"{name} ({each.config.model}, {count_parameters(each.model):,} parameters)"
        for name, each in app.state.served.runs.items()
    )
    warning = exposure_warning(host, token)
    if warning:
        on_warning(warning)
    on_ready(
        f"serving {models} on http://{shown}:{bound_port}{f' with {workers} workers' if workers > 1 else ''}"
        " — Ctrl-C to stop"
    )
    try:
        if workers == 1:
            torch.set_num_threads(threads)
            _run_uvicorn(app, listener, limits, access_log)
        else:
            del app  # each worker loads its own
            runs = run if isinstance(run, (list, tuple)) else [run]
            paths = [each.path if isinstance(each, Run) else each for each in runs]
            run_workers(workers, _serve_worker, (listener, paths, limits, access_log, threads, device, guard))
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a normal stop
        pass
    finally:
        listener.close()


class Guarding(NamedTuple):
    """What digitlab.serving.guard checks, as `serve` passes it to each worker."""

    hosts: frozenset[str] | None
    token: str | None
    any_address: bool


def exposure_warning(host: str, token: str | None) -> str | None:
    """A warning for a server bound beyond loopback (None on loopback): who can reach it, and what to do."""
    if host.strip("[]").lower() in LOOPBACK_HOSTS or host.startswith("127."):
        return None
    reach = "every network this machine is on" if host in WILDCARD_ADDRESSES else f"the network of {host}"
    guard = "the API wants the token" if token else "anyone there can use it (no --token given)"
    return (
        f"warning: listening on {host}, reachable from {reach}, over plain HTTP; {guard}. "
        "To expose the demo, put it behind a reverse proxy with TLS (docs/serving.md)."
    )


def _run_uvicorn(app: FastAPI, listener: socket.socket, limits: Limits, access_log: bool) -> None:
    tune_malloc()
    uvicorn.Server(uvicorn_config(app, limits, access_log)).run(sockets=[listener])


def _serve_worker(
    listener: socket.socket,
    run: list,
    limits: Limits,
    access_log: bool,
    threads: int,
    device: str | torch.device,
    guard: Guarding,
):
    """One of several server processes (see digitlab.serving.workers): its own model and app on the shared socket."""
    torch.set_num_threads(threads)
    app = create_app(run, limits, device, guard.hosts, guard.token, guard.any_address)
    _run_uvicorn(app, listener, limits, access_log)


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
