"""The web demo's API: every route, every kind of bad input, off-loop inference, and `digitlab serve` itself."""

import base64
import http.client
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

import digitlab.serving.app
from digitlab.cli import main
from digitlab.images.preprocess import preprocess_file
from digitlab.models.nets import count_parameters
from digitlab.serving.app import Limits, create_app
from digitlab.serving.protocol import uvicorn_config
from scans import png_bytes, render_scan
from test_preprocess import write_png_with_declared_size

MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # the tests' own limit (the default, 25 MB, is too big to send often)
SMALL = Limits(max_upload_bytes=MAX_UPLOAD_BYTES, max_pixels=16_000_000)


@pytest.fixture(scope="module")
def client(seed_run):
    with TestClient(create_app(seed_run.path, SMALL), base_url="http://localhost") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def scan(mnist, tmp_path_factory):
    """Test digit 0 (a 7) as a scan: dark ink on light paper, off-centre, noisy; (path, bytes)."""
    path = tmp_path_factory.mktemp("serve") / "seven.png"
    path.write_bytes(png_bytes(render_scan(mnist.test.images[0, 0].numpy(), np.random.default_rng(5))))
    return path, path.read_bytes()


def test_health_model_page_static_files_and_docs(client, seed_run):
    assert client.get("/healthz").json() == {"status": "ok"}
    about = client.get("/api/model").json()
    assert about["model"] == "mlp" and about["run"] == seed_run.path.name
    assert about["parameters"] == count_parameters(seed_run.model) == seed_run.metrics["parameters"]
    assert about["test_accuracy"] == seed_run.metrics["test_accuracy"] > 0.9
    assert about["epochs"] == 1 and about["classes"] == list("0123456789") and about["dataset"] == "mnist"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and 'type="file"' in page.text
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"] and len(response.text) > 500
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/healthz",
        "/api/model",
        "/api/models",
        "/api/weights",
        "/api/predict",
        "/api/number",
        "/api/explain",
    }
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}


def _check_prediction(answer, expected):
    assert answer["label"] == expected.label and answer["index"] == expected.index
    assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-12)
    assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-9)
    assert answer["confidence"] == max(answer["probabilities"])
    assert answer["image"] == expected.image[0].tolist()
    assert len(answer["image"]) == 28 and all(len(row) == 28 for row in answer["image"])
    assert answer["box"] == list(expected.box) and len(answer["box"]) == 4


def test_upload_and_base64_json_give_what_predict_gives(client, seed_run, scan):
    path, data = scan
    expected = seed_run.predict(path)[0]
    assert expected.label == "7" and expected.confidence > 0.9
    assert np.array_equal(expected.image.numpy(), preprocess_file(path).numpy())  # predict's preprocessing
    encoded = base64.b64encode(data).decode()
    for request in (
        {"files": {"file": ("seven.png", data, "image/png")}},
        {"json": {"image": encoded}},
        {"json": {"image": f"data:image/png;base64,{encoded}"}},  # what canvas.toDataURL() gives
        {"json": {"image": "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))}},
    ):
        response = client.post("/api/predict", **request)
        assert response.status_code == 200, response.text
        _check_prediction(response.json(), expected)


def test_a_drawing_on_a_black_canvas_reads_like_mnist(client):
    """White strokes on black, as the page's canvas sends them: a vertical stroke is a 1."""
    canvas = Image.new("RGB", (280, 280), "black")
    canvas.paste("white", (130, 40, 150, 240))
    answer = client.post("/api/predict", json={"image": base64.b64encode(png_bytes(canvas)).decode()}).json()
    assert answer["label"] == "1"
    image = np.array(answer["image"])
    assert image.max() == 255 and image[:, :8].max() == 0 and image[:, -8:].max() == 0  # centred, bright ink


def _noise_png(side: int) -> bytes:
    """A real, decodable PNG that does not compress: random pixels."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(pixels))


def _chunks(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _multipart(data: bytes, boundary: str = "digitlab") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _bad_requests(tmp_path, scan):
    """(name, request keywords, status, a fragment of the error message)."""
    big = _noise_png(900)
    assert MAX_UPLOAD_BYTES < len(big) < 4 * MAX_UPLOAD_BYTES and Image.open(io.BytesIO(big)).size == (900, 900)
    just_over = scan[1] + bytes(MAX_UPLOAD_BYTES + 1 - len(scan[1]))  # a valid PNG with trailing bytes
    bomb = write_png_with_declared_size(tmp_path / "bomb.png", 20_000, 3_000).read_bytes()
    wide = png_bytes(Image.new("L", (4001, 4000), 255))
    multipart = {"content-type": "multipart/form-data; boundary=digitlab"}
    return [
        (
            "upload over 2 MiB",
            {"files": {"file": ("big.png", big, "image/png")}},
            413,
            "limited to 2,097,152 bytes (2.1 MB)",
        ),
        (
            "upload of 2 MiB + 1 byte",
            {"files": {"file": ("x.png", just_over, "image/png")}},
            413,
            "image is more than 2,097,152 bytes",
        ),
        (
            "chunked upload over 2 MiB",
            {"content": _chunks(_multipart(big)), "headers": multipart},
            413,
            "request is more than",
        ),
        (
            "base64 over 2 MiB",
            {"json": {"image": base64.b64encode(just_over).decode()}},
            413,
            "image is 2,097,153 bytes",
        ),
        (
            "over 16 megapixels",
            {"files": {"file": ("wide.png", wide, "image/png")}},
            413,
            "4001×4000 pixels (16 megapixels), more than the 16 megapixels allowed",
        ),
        (
            "decompression bomb",
            {"files": {"file": ("bomb.png", bomb, "image/png")}},
            413,
            "20000×3000 pixels (60 megapixels), more than the 16 megapixels allowed (decompression-bomb guard)",
        ),
        (
            "text file",
            {"files": {"file": ("notes.png", b"not a picture\n", "image/png")}},
            422,
            "notes.png: not an image file",
        ),
        ("truncated PNG", {"files": {"file": ("cut.png", scan[1][:300], "image/png")}}, 422, "truncated or corrupt"),
        ("empty file", {"files": {"file": ("empty.png", b"", "image/png")}}, 422, "empty file"),
        (
            "blank image",
            {"json": {"image": base64.b64encode(png_bytes(Image.new("L", (280, 280)))).decode()}},
            422,
            "no ink found",
        ),
        (
            "malformed JSON",
            {"content": b'{"image": ', "headers": {"content-type": "application/json"}},
            400,
            "malformed JSON",
        ),
        (
            "JSON that is not UTF-8",
            {"content": b"\xff\xfe{", "headers": {"content-type": "application/json"}},
            400,
            "malformed JSON",
        ),
        ("JSON list", {"json": [1, 2]}, 400, 'expected a JSON object with an "image" string'),
        ("JSON without image", {"json": {"picture": "iVBOR"}}, 400, 'expected a JSON object with an "image"'),
        ("image not a string", {"json": {"image": 42}}, 400, 'expected a JSON object with an "image"'),
        ("bad base64", {"json": {"image": "not base64!"}}, 400, "not valid base64"),
        (
            "form without file",
            {"data": {"note": "hello"}, "files": {"other": ("x.png", scan[1], "image/png")}},
            400,
            'no file in its "file" field',
        ),
        (
            "form field that is not a file",
            {"data": {"file": "hello"}, "files": {"x": ("x.png", b"x", "image/png")}},
            400,
            'no file in its "file" field',
        ),
        (
            "multipart without boundary",
            {"content": b"abc", "headers": {"content-type": "multipart/form-data"}},
            400,
            "boundary",
        ),
        (
            "plain text",
            {"content": b"hello", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported content type 'text/plain'",
        ),
        ("no content type", {"content": b"hello"}, 415, "unsupported content type 'none'"),
    ]


@pytest.mark.parametrize("route", ["/api/predict", "/api/explain"])
def test_every_bad_input_is_a_4xx_with_a_one_line_json_error_and_serving_goes_on(
    client, seed_run, scan, tmp_path, route
):
    good = {"files": {"file": ("seven.png", scan[1], "image/png")}}
    for name, request, status, fragment in _bad_requests(tmp_path, scan):
        response = client.post(route, **request)
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert set(response.json()) == {"error"} and fragment in error and "\n" not in error, (name, error)
        assert client.get("/healthz").status_code == 200, name
        assert client.post("/api/predict", **good).json()["label"] == "7", name


def test_wrong_method_and_unknown_path_answer_json(client):
    wrong = client.get("/api/predict")
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}
    assert "POST" in wrong.headers["allow"]
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


def test_the_model_is_loaded_once(seed_run, scan, monkeypatch):
    loads = []
    real_load_run = digitlab.runs.shipped.load_run  # serve resolves its run (or the shipped model) through shipped
    monkeypatch.setattr(
        digitlab.runs.shipped, "load_run", lambda path, device="cpu": loads.append(path) or real_load_run(path)
    )
    with TestClient(create_app(seed_run.path), base_url="http://localhost") as test_client:
        for _ in range(3):
            assert test_client.post("/api/predict", files={"file": ("7.png", scan[1], "image/png")}).status_code == 200
        assert test_client.get("/api/model").status_code == 200
    assert loads == [seed_run.path]


def test_a_bug_is_a_json_500_and_the_server_goes_on(seed_run, scan, monkeypatch):
    def broken(run, data, source, limits):
        raise RuntimeError("a bug")

    upload = {"files": {"file": ("seven.png", scan[1], "image/png")}}
    with TestClient(create_app(seed_run), base_url="http://localhost", raise_server_exceptions=False) as test_client:
        monkeypatch.setattr(digitlab.serving.app, "prepare_upload", broken)
        response = test_client.post("/api/predict", **upload)
        assert response.status_code == 500 and response.json() == {"error": "internal error (RuntimeError)"}
        monkeypatch.undo()
        assert test_client.post("/api/predict", **upload).json()["label"] == "7"


class LiveServer:
    """The app under uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(app, app.state.limits))  # the limits `digitlab serve` runs with
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.listener]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.listener.close()

    def request(self, method, path, body=None, headers=None, timeout=10):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


def test_inference_runs_off_the_event_loop(seed_run, scan, monkeypatch):
    """While one prediction is stuck in its worker thread, health checks and other predictions still answer."""
    entered, release = threading.Event(), threading.Event()
    real_classify = digitlab.serving.app.prepare_upload

    def classify(run, data, source, limits):
        if source == "stuck.png":
            entered.set()
            assert release.wait(20)
        return real_classify(run, data, source, limits)

    monkeypatch.setattr(digitlab.serving.app, "prepare_upload", classify)
    body = lambda name: json.dumps({"image": base64.b64encode(scan[1]).decode(), "name": name})  # noqa: E731
    headers = {"Content-Type": "application/json"}
    with LiveServer(create_app(seed_run)) as live:
        stuck = {}
        thread = threading.Thread(
            target=lambda: stuck.update(answer=live.request("POST", "/api/predict", body("stuck.png"), headers))
        )
        thread.start()
        try:
            assert entered.wait(10)
            assert live.request("GET", "/healthz", timeout=5) == (200, {"status": "ok"})
            status, answer = live.request("POST", "/api/predict", body("free.png"), headers, timeout=5)
            assert status == 200 and answer["label"] == "7"
            assert thread.is_alive()  # the first request is still waiting for its worker
        finally:
            release.set()
            thread.join(10)
    assert stuck["answer"][0] == 200 and stuck["answer"][1]["label"] == "7"


def test_oversized_uploads_get_their_413_over_a_real_connection(seed_run):
    """A client that sends all of a too-large body before it reads still gets the 413 (uvicorn drops the rest)."""
    with LiveServer(create_app(seed_run, SMALL)) as live:
        big = _multipart(bytes(3 * MAX_UPLOAD_BYTES))
        status, answer = live.request(
            "POST", "/api/predict", big, {"Content-Type": "multipart/form-data; boundary=digitlab"}
        )
        assert status == 413 and "images are limited to 2,097,152 bytes (2.1 MB)" in answer["error"]
        assert live.request("GET", "/healthz") == (200, {"status": "ok"})


def test_cli_refuses_a_missing_or_corrupt_run_and_a_taken_port(seed_run, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"digitlab: error: no run folder at {tmp_path / 'nowhere'}\n"
    broken = tmp_path / "broken"
    shutil.copytree(seed_run.path, broken)
    model = broken / "model.safetensors"
    model.write_bytes(model.read_bytes()[:500])
    assert main(["serve", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("digitlab: error: ") and err.count("\n") == 1 and "model.safetensors" in err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(seed_run.path), "--port", str(port)]) == 2
    taken_message = f"digitlab: error: cannot listen on 127.0.0.1:{port}: the port is already in use\n"
    assert capsys.readouterr().err == taken_message
    assert main(["serve", str(seed_run.path), "--port", "70000"]) == 2
    assert capsys.readouterr().err == "digitlab: error: port must be between 0 and 65535, got 70000\n"


def start_server(run_path) -> tuple[subprocess.Popen, str]:
    """`digitlab serve RUN --port 0` in a subprocess; returns it and the URL it printed."""
    server = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "serve", str(run_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = server.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        server.kill()
        raise AssertionError(line + server.stderr.read())
    return server, match[0]


@pytest.mark.slow
def test_cli_serves_until_ctrl_c(seed_run):
    """`digitlab serve RUN --port 0` prints its URL, answers, and stops cleanly (exit 0) on SIGINT."""
    server, url = start_server(seed_run.path)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
        connection.request("GET", "/api/model")
        assert json.loads(connection.getresponse().read())["run"] == seed_run.path.name
        connection.close()
        server.send_signal(signal.SIGINT)
        assert server.wait(10) == 0
        assert "Traceback" not in server.stderr.read()
    finally:
        server.kill()
        server.wait()
