"""Phone photos end to end: every format phones and drawing apps produce, the size limits, bounded memory,
and the box, through the Python API, `digitlab predict` and POST /api/predict."""

import io
import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pillow_heif
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import digitlab.serving.app
from digitlab.cli import main
from digitlab.inference.realworld import phone_page
from digitlab.serving.app import Limits, create_app
from test_serve import LiveServer

pillow_heif.register_heif_opener()


@pytest.fixture(scope="module")
def page(mnist):
    """Test digit 0 (a 7) written on plain paper, 1200×900 RGB, and its true box."""
    return phone_page(mnist.test.images[0, 0].numpy(), np.random.default_rng(11), size=(1200, 900), height=300)


@pytest.fixture(scope="module")
def client(seed_run):
    with TestClient(create_app(seed_run.path), base_url="http://localhost") as test_client:
        yield test_client


def encode(picture: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=format, **options)
    return buffer.getvalue()


def transparent_drawing(page) -> Image.Image:
    """The digit's dark strokes on a fully transparent sheet, as a drawing app exports them."""
    gray = np.asarray(page[0].convert("L"))
    alpha = np.clip((200 - gray.astype(np.int16)) * 2, 0, 255).astype(np.uint8)
    return Image.merge("LA", [Image.new("L", page[0].size, 20), Image.fromarray(alpha)]).convert("RGBA")


def rotated_exif(page) -> bytes:
    """The page stored turned a quarter (as a phone's sensor saw it) with EXIF orientation 6 to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return encode(page[0].transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif.tobytes())


def kinds(page) -> dict[str, bytes]:
    picture = page[0]
    gray = picture.convert("L")
    frames = [gray.convert("P"), Image.new("P", picture.size, 0)]
    return {
        "photo.heic": encode(picture, "HEIF", quality=90),
        "deep.png": encode(Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), "PNG"),
        "print.jpg": encode(picture.convert("CMYK"), "JPEG", quality=90),
        "progressive.jpg": encode(picture, "JPEG", quality=85, progressive=True),
        "drawing.png": encode(transparent_drawing(page), "PNG"),
        "palette.png": encode(transparent_drawing(page).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "photo.webp": encode(picture, "WEBP", quality=90),
        "first-frame.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "scan.tiff": encode(gray, "TIFF", save_all=True, append_images=[Image.new("L", picture.size, 0)]),
        "turned.jpg": rotated_exif(page),
    }


def assert_near(box, truth, tolerance=12):
    assert all(abs(found - true) <= tolerance for found, true in zip(box, truth, strict=False)), (box, truth)


@pytest.mark.slow
def test_every_format_reads_the_same_through_the_api_the_cli_and_http(seed_run, page, client, tmp_path, capsys):
    files = kinds(page)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    api = {result.source.rsplit("/", 1)[-1]: result for result in seed_run.predict(tmp_path, errors="collect")}
    assert set(api) == set(files) and all(result.ok for result in api.values()), api
    assert {result.label for result in api.values()} == {"7"}
    for name, result in api.items():
        assert_near(result.box, page[1]), name
    assert main(["predict", str(seed_run.path), str(tmp_path), "--json"]) == 0
    cli = {entry["file"].rsplit("/", 1)[-1]: entry for entry in json.loads(capsys.readouterr().out)}
    for name, data in files.items():
        answer = client.post("/api/predict", files={"file": (name, data, "application/octet-stream")})
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["label"] == cli[name]["label"] == "7" and answer.json()["box"] == cli[name]["box"]
        assert cli[name]["box"] == list(api[name].box)


def test_ruled_squared_and_a_tiny_digit_in_a_corner_of_a_phone_photo(seed_run, mnist, client):
    seven = mnist.test.images[0, 0].numpy()
    for paper, corner, height in (("ruled", False, None), ("squared", False, None), ("plain", True, 140)):
        picture, truth = phone_page(seven, np.random.default_rng(3), paper=paper, corner=corner, height=height)
        data = encode(picture, "JPEG", quality=90)
        result = seed_run.predict([picture])[0]
        assert_near(result.box, truth, tolerance=20)
        answer = client.post("/api/predict", files={"file": (f"{paper}.jpg", data, "image/jpeg")}).json()
        assert_near(answer["box"], truth, tolerance=20)
        assert answer["label"] == result.label


@pytest.mark.slow
def test_big_phone_files_get_answers_and_a_30_mb_file_a_413(seed_run, mnist, client, tmp_path, capsys):
    """A PNG over 3.4 MB, a 48-megapixel JPEG over 8 MB: 200 from the API and a label from `digitlab predict`."""
    seven = mnist.test.images[0, 0].numpy()
    png, _ = phone_page(seven, np.random.default_rng(5), size=(1800, 1350), height=400)
    noisy = np.asarray(png, np.int16) + np.random.default_rng(0).integers(-6, 7, (1350, 1800, 3))
    files = {"scan.png": encode(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "PNG", compress_level=1)}
    big, truth = phone_page(seven, np.random.default_rng(6), size=(8000, 6000))
    files["phone-48mp.jpg"] = encode(big, "JPEG", quality=98)
    assert len(files["scan.png"]) > 3.4e6 and len(files["phone-48mp.jpg"]) > 8e6
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        answer = client.post("/api/predict", files={"file": (name, data, "image/octet-stream")})
        assert answer.status_code == 200 and answer.json()["label"] == "7", (name, answer.text)
    assert_near(answer.json()["box"], truth, tolerance=40)
    assert main(["predict", str(seed_run.path), *map(str, sorted(tmp_path.iterdir()))]) == 0
    assert capsys.readouterr().out.count(" 7 ") == 2
    too_big = files["phone-48mp.jpg"] + bytes(30_000_000 - len(files["phone-48mp.jpg"]))
    refused = client.post("/api/predict", files={"file": ("huge.jpg", too_big, "image/jpeg")})
    assert refused.status_code == 413
    error = refused.json()["error"]  # refused from Content-Length, before the body is read
    assert error.startswith("request is 30,000,") and error.endswith("images are limited to 25,000,000 bytes (25 MB)")


def test_megapixels_over_the_limit_get_a_413_naming_it(seed_run, page):
    data = encode(page[0], "JPEG")
    with TestClient(create_app(seed_run, Limits(max_pixels=1_000_000)), base_url="http://localhost") as small:
        answer = small.post("/api/predict", files={"file": ("page.jpg", data, "image/jpeg")})
    assert answer.status_code == 413
    assert answer.json()["error"] == (
        "page.jpg: image is 1200×900 pixels (1.08 megapixels), more than the "
        "1 megapixels allowed (decompression-bomb guard)"
    )


def test_hostile_heic_and_jpeg_files_are_one_line_errors(seed_run, page, client, tmp_path, capsys):
    heic = encode(page[0], "HEIF")
    bad = {
        "cut.heic": heic[: len(heic) // 3],
        "fake.heic": b"\x00\x00\x00\x18ftypheic" + bytes(200),
        "cut.jpg": encode(page[0], "JPEG")[:2000],
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        answer = client.post("/api/predict", files={"file": (name, data, "image/heic")})
        assert answer.status_code == 422 and "\n" not in answer.json()["error"], (name, answer.text)
        assert answer.json()["error"].startswith(f"{name}: ")
    assert main(["predict", str(seed_run.path), str(tmp_path)]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == len(bad) and all(line.startswith("digitlab: error: ") for line in errors)
    assert client.get("/healthz").status_code == 200


def test_a_full_queue_gets_503_with_retry_after(seed_run, page, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real_classify = digitlab.serving.app.prepare_upload

    def classify(run, data, source, limits):
        if source == "slow.jpg":
            entered.set()
            assert release.wait(20)
        return real_classify(run, data, source, limits)

    monkeypatch.setattr(digitlab.serving.app, "prepare_upload", classify)
    data = encode(page[0], "JPEG")

    def body(name):
        return (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
            + name.encode()
            + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
            + data
            + b"\r\n--b--\r\n"
        )

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    with LiveServer(create_app(seed_run, Limits(max_decoding=1, max_queued=0))) as live:
        slow = {}
        thread = threading.Thread(
            target=lambda: slow.update(answer=live.request("POST", "/api/predict", body("slow.jpg"), headers))
        )
        thread.start()
        try:
            assert entered.wait(10)
            status, answer = live.request("POST", "/api/predict", body("next.jpg"), headers, timeout=5)
            assert status == 503 and "retry in 2 s" in answer["error"]
        finally:
            release.set()
            thread.join(10)
        assert slow["answer"][0] == 200
        assert live.request("POST", "/api/predict", body("next.jpg"), headers)[0] == 200


MEMORY_PROBE = textwrap.dedent("""
    import io, sys
    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image
    from digitlab.serving.app import create_app

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    data = open(sys.argv[2], "rb").read()
    small = io.BytesIO()
    Image.open(io.BytesIO(data)).reduce(16).save(small, "JPEG")
    with TestClient(create_app(sys.argv[1]), base_url="http://localhost") as client:
        assert client.post("/api/predict", files={"file": ("warm.jpg", small.getvalue())}).status_code == 200
        idle = rss("VmRSS:")
        open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
        answer = client.post("/api/predict", files={"file": ("100mp.jpg", data)})
        print(answer.status_code, answer.json().get("label"), idle, rss("VmHWM:"))
""")


@pytest.mark.slow
def test_a_100_megapixel_jpeg_takes_under_300_mb_above_the_idle_server(seed_run, mnist, tmp_path):
    """Peak RSS while the server answers one 10000×10000 JPEG, measured in a fresh process (Linux /proc)."""
    sheet = Image.new("L", (10_000, 10_000), 228)  # mostly uniform: encodes in a second
    digit = Image.fromarray(255 - mnist.test.images[0, 0].numpy()).resize((1500, 1500), Image.Resampling.BICUBIC)
    sheet.paste(digit.point(lambda level: level * 228 // 255), (4000, 3000))
    path = tmp_path / "100mp.jpg"
    sheet.convert("RGB").save(path, format="JPEG", quality=90)
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(seed_run.path), str(path)], capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0, probe.stderr
    status, label, idle, peak = probe.stdout.split()
    above = (int(peak) - int(idle)) / 2**20
    print(f"peak RSS {above:.0f} MiB above the idle server for a {path.stat().st_size:,}-byte 100-MP JPEG")
    assert status == "200" and label == "7" and above <= 300
