"""The exported static page in a real browser (Debian chromium driven by Playwright), with no digitlab server:
served by Python's plain static file server on 127.0.0.1, and opened from disk (file://).

In-browser preprocessing is held to Python's: for every drawing the test reads the pad's pixels (as
the PNG the served page would upload) and the 28×28 image the page fed its model, runs the PNG
through digitlab.images.preprocess, and requires the same image (±1 gray level) and the same label.
Set DIGITLAB_SCREENSHOTS=docs/images to regenerate the README's picture (web-export.png).
"""

import base64
import io
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from browsers import watch
from digitlab.images.preprocess import preprocess_image

pytestmark = pytest.mark.browser

# Stroke paths as fractions of the pad. None is exactly mirror-symmetric: for a perfectly symmetric
# drawing the centre of mass falls on a half pixel, and which way it rounds then depends on the last
# bit of Pillow's float sums (see the README), so such a drawing can land one pixel apart.
SEVEN = [[(0.28, 0.22), (0.72, 0.22), (0.42, 0.82)]]
ONE = [[(0.5, 0.15), (0.52, 0.85)]]
DRAWINGS = {
    "zero": [[(0.5, 0.2), (0.3, 0.35), (0.31, 0.7), (0.52, 0.83), (0.7, 0.62), (0.68, 0.3), (0.5, 0.2)]],
    "two": [[(0.3, 0.3), (0.45, 0.18), (0.65, 0.28), (0.6, 0.48), (0.3, 0.8), (0.72, 0.8)]],
    "four": [[(0.55, 0.15), (0.3, 0.6), (0.75, 0.6)], [(0.6, 0.4), (0.6, 0.88)]],
    # a small digit (the pen is thick for it: strokes are thinned) and one filling the pad (thickened)
    "small three": [[(0.45, 0.42), (0.55, 0.41), (0.49, 0.49), (0.56, 0.53), (0.45, 0.6)]],
    "huge eight": [[(0.5, 0.02), (0.97, 0.25), (0.03, 0.75), (0.5, 0.98), (0.97, 0.75), (0.03, 0.25), (0.5, 0.02)]],
}


@pytest.fixture(scope="module")
def page_folder(web_page):
    return web_page[0]


@pytest.fixture(scope="module")
def static_url(page_folder):
    """`python -m http.server` on 127.0.0.1 serving the exported folder; nothing of digitlab runs."""
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(page_folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        port = int(line.split(" port ")[1].split()[0])
        url = f"http://127.0.0.1:{port}/index.html"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        yield url
    finally:
        server.terminate()
        server.wait(10)


def open_page(browser, url):
    """A new page at `url`, collecting console errors, page errors and failed requests; returns (page, problems)."""
    page = browser.new_page(viewport={"width": 1000, "height": 760})
    problems = watch(page)
    page.goto(url, wait_until="load")
    return page, problems


def draw(page, strokes):
    """Clear the pad, drag the mouse along each stroke, and wait until the page has answered the whole drawing."""
    page.click("#clear")
    before = page.evaluate("digitlabPage.predictions")
    box = page.locator("#pad").bounding_box()
    for path in strokes:
        page.mouse.move(box["x"] + path[0][0] * box["width"], box["y"] + path[0][1] * box["height"])
        page.mouse.down()
        for x, y in path[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=12)
        page.mouse.up()
    page.wait_for_function(f"digitlabPage.predictions > {before} && digitlabPage.idle()", timeout=60_000)
    return page.evaluate("""() => ({
        label: document.getElementById('label').textContent,
        image: digitlabPage.lastImage,
        png: document.getElementById('pad').toDataURL('image/png'),
        hidden: Array.from(document.querySelectorAll('#hidden .cell')).map(cell => parseFloat(cell.dataset.value)),
        bars: Array.from(document.querySelectorAll('#bars .fill')).map(fill => parseFloat(fill.style.height)),
    })""")


def python_reading(run, png_data_url):
    """What digitlab's Python side makes of the same pad: the 28×28 image and the model's label."""
    picture = Image.open(io.BytesIO(base64.b64decode(png_data_url.split(",", 1)[1])))
    image = preprocess_image(picture, run.preprocess)
    with torch.no_grad():
        logits = run.model(image.float().unsqueeze(0) / 255)
    return image[0].numpy().astype(int), run.classes[int(logits.argmax())]


def assert_same_as_python(run, drawn, name):
    expected_image, expected_label = python_reading(run, drawn["png"])
    found = np.array(drawn["image"]).reshape(28, 28)
    difference = np.abs(found - expected_image)
    assert difference.max() <= 1, f"{name}: {int((difference > 1).sum())} pixels differ by up to {difference.max()}"
    assert drawn["label"] == expected_label, name


def check_seven_and_one(browser, url, run, screenshot=None):
    page, problems = open_page(browser, url)
    seven = draw(page, SEVEN)  # drawn at once: the page answers as soon as the model is ready
    timings = page.evaluate("digitlabPage.timings")
    assert "parameters" in page.text_content("#model-info")
    assert seven["label"] == "7" and abs(sum(seven["bars"]) - 100) < 1
    assert_same_as_python(run, seven, "seven")
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    one = draw(page, ONE)
    assert one["label"] == "1"
    assert_same_as_python(run, one, "one")
    assert len(seven["hidden"]) == 48 and seven["hidden"] != one["hidden"]  # 32 + 16 units, and they moved
    page.click("#clear")
    assert page.text_content("#label") == "?"
    assert problems == []
    page.close()
    return timings


def test_static_server_page_matches_python_and_answers_fast(browser, static_url, seed_run, tmp_path):
    timings = check_seven_and_one(browser, static_url, seed_run, screenshot=tmp_path / "web-export.png")
    assert timings["ready"] < timings["firstPrediction"]
    # the goal is 2 s on an idle machine (benchmarks/web_export.py measures it); a shared CI box gets slack
    assert timings["firstPrediction"] < 20_000, timings
    _keep(tmp_path / "web-export.png")


def test_page_opened_from_disk_works_the_same(browser, page_folder, seed_run):
    check_seven_and_one(browser, (page_folder / "index.html").as_uri(), seed_run)


def test_in_browser_preprocessing_matches_python_on_more_drawings(browser, static_url, seed_run):
    page, problems = open_page(browser, static_url)
    for name, strokes in DRAWINGS.items():
        assert_same_as_python(seed_run, draw(page, strokes), name)
    assert problems == []
    page.close()


def _keep(screenshot: Path) -> None:
    folder = os.environ.get("DIGITLAB_SCREENSHOTS")
    if folder:
        shutil.copyfile(screenshot, Path(folder) / screenshot.name)
