"""The web demo in a real browser: `digitlab serve` in a subprocess, headless Debian chromium driven by Playwright.

Screenshots go to the test's tmp folder; set DIGITLAB_SCREENSHOTS=docs/images to regenerate the
README's pictures (serve.png, serve-phone.png) on purpose.
"""

import itertools
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from browsers import watch
from scans import png_bytes, render_scan
from test_serve import start_server

pytestmark = pytest.mark.browser

SEVEN = [(0.28, 0.22), (0.72, 0.22), (0.42, 0.82)]  # a stroke path as fractions of the pad: a 7
VERTICAL = [(0.5, 0.15), (0.5, 0.85)]  # a 1


@pytest.fixture(scope="module")
def server_url(seed_run):
    """`digitlab serve RUN --port 0` on 127.0.0.1, for the whole module; yields its URL once /healthz answers."""
    server, url = start_server(seed_run.path)
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            assert response.status == 200
        yield url
    finally:
        server.terminate()
        server.wait(10)


# The page's fetches in flight, counted in the page (window.fetching()), so a test waits for the last answer
# to land rather than for a while
COUNT_FETCHES = """(() => {
  const fetchOnce = window.fetch.bind(window);
  let inFlight = 0;
  window.fetching = () => inFlight;
  window.fetch = (...args) => {
    inFlight += 1;
    return fetchOnce(...args).finally(() => { inFlight -= 1; });
  };
})();"""


def open_demo(page, url):
    """Load the demo in `page`, collecting every console error, page error and failed request; returns the list."""
    problems = watch(page)
    page.add_init_script(COUNT_FETCHES)
    page.goto(url, wait_until="load")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('parameters')")
    return problems


def stroke(page, path, release=True):
    """Drag the mouse along `path` (fractions of the pad) with the button held."""
    box = page.locator("#pad").bounding_box()
    at = lambda x, y: (box["x"] + x * box["width"], box["y"] + y * box["height"])  # noqa: E731
    page.mouse.move(*at(*path[0]))
    page.mouse.down()
    for point in path[1:]:
        page.mouse.move(*at(*point), steps=15)
    if release:
        page.mouse.up()


def settled_result(page):
    """Wait for the answer to the latest request, then read the label, the bars and the 28×28 preview."""
    page.wait_for_function(
        "window.fetching() === 0 && !document.getElementById('label').classList.contains('empty') && "
        "document.getElementById('status').textContent === ''"
    )
    return page.evaluate("""() => ({
        label: document.getElementById('label').textContent,
        confidence: document.getElementById('confidence').textContent,
        source: document.getElementById('source').textContent,
        bars: Array.from(document.querySelectorAll('#bars .bar')).map(bar => ({
            name: bar.querySelector('.name').textContent, top: bar.classList.contains('top'),
            height: parseFloat(bar.querySelector('.fill').style.height)})),
        seenMax: Math.max(...document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data
            .filter((_, index) => index % 4 === 0)),
    })""")


def clear_scan_of_a_three(run, mnist, folder):
    """A scan (dark on light, 160 px) of the first test 3 that the model, through Python, reads as 3 with >95%."""
    path = folder / "three.png"
    for index in np.flatnonzero(mnist.test.labels.numpy() == 3)[:20]:
        scan = render_scan(mnist.test.images[index, 0].numpy(), np.random.default_rng(7), side=160)
        path.write_bytes(png_bytes(scan))
        expected = run.predict(path)[0]
        if expected.label == "3" and expected.confidence > 0.95:
            return path
    pytest.fail("none of the first 20 test 3s is read as a 3 with >95% confidence")


def test_draw_clear_draw_a_one_and_upload(browser, server_url, seed_run, mnist, tmp_path):
    page = browser.new_page(viewport={"width": 960, "height": 680}, bypass_csp=True)  # Playwright's waits eval
    problems = open_demo(page, server_url)
    info = page.text_content("#model-info")
    assert "mlp" in info and "25,818 parameters" in info and "% test accuracy" in info

    stroke(page, SEVEN, release=False)  # live: an answer arrives while the button is still down
    page.wait_for_function("!document.getElementById('label').classList.contains('empty')")
    page.mouse.up()
    drawn = settled_result(page)
    assert drawn["label"] in "0123456789" and drawn["confidence"].endswith("% sure") and drawn["seenMax"] > 200
    assert [bar["name"] for bar in drawn["bars"]] == list("0123456789")
    assert sum(bar["height"] for bar in drawn["bars"]) == pytest.approx(100, abs=0.6)
    assert [bar["name"] for bar in drawn["bars"] if bar["top"]] == [drawn["label"]]
    page.screenshot(path=tmp_path / "serve.png", full_page=True)

    page.click("#clear")
    assert page.text_content("#label") == "?" and page.text_content("#confidence") == "draw a digit"
    assert all(
        float(height or 0) == 0
        for height in page.eval_on_selector_all(
            "#bars .fill", "fills => fills.map(fill => parseFloat(fill.style.height))"
        )
    )

    stroke(page, VERTICAL)
    one = settled_result(page)
    assert one["label"] == "1" and [bar["name"] for bar in one["bars"] if bar["top"]] == ["1"]
    assert one["source"] == "from your drawing"

    scan = clear_scan_of_a_three(seed_run, mnist, tmp_path)
    page.set_input_files("#upload", str(scan))
    uploaded = settled_result(page)
    assert uploaded["label"] == "3" and uploaded["source"] == "from three.png"
    assert problems == []
    page.close()
    _keep(tmp_path / "serve.png")


def touch_stroke(page, path):
    """Drag one finger along `path` (fractions of the pad), as raw touch events from the browser's input layer."""
    box = page.locator("#pad").bounding_box()
    at = lambda x, y: {"x": box["x"] + x * box["width"], "y": box["y"] + y * box["height"]}  # noqa: E731
    session = page.context.new_cdp_session(page)
    session.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [at(*path[0])]})
    for (x0, y0), (x1, y1) in itertools.pairwise(path):
        for step in range(1, 16):
            fraction = step / 15
            point = at(x0 + (x1 - x0) * fraction, y0 + (y1 - y0) * fraction)
            session.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    session.detach()


def test_phone_touch_drawing_without_sideways_scrolling(browser, server_url, tmp_path):
    context = browser.new_context(
        bypass_csp=True,  # Playwright's wait_for_function evaluates strings; the policy itself: see below
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = context.new_page()
    problems = open_demo(page, server_url)
    touch_stroke(page, VERTICAL)
    assert settled_result(page)["label"] == "1"
    page.click("#clear")
    touch_stroke(page, SEVEN)
    result = settled_result(page)
    assert len(result["bars"]) == 10 and page.evaluate("window.scrollY") == 0  # the finger drew, it did not scroll
    layout = page.evaluate("""() => ({scroll: document.documentElement.scrollWidth, width: window.innerWidth,
        pad: document.getElementById('pad').getBoundingClientRect().width,
        bars: document.getElementById('bars').getBoundingClientRect().right})""")
    assert layout["scroll"] <= layout["width"] and layout["bars"] <= layout["width"]
    assert 280 <= layout["pad"] <= 330
    page.screenshot(path=tmp_path / "serve-phone.png", full_page=True)
    assert problems == []
    context.close()
    _keep(tmp_path / "serve-phone.png")


def test_the_page_works_under_its_content_security_policy(browser, server_url):
    """With the policy enforced (the other tests bypass it, since Playwright's waits evaluate strings): the page
    loads its model, a drawn 7 is read, and nothing is refused (a violation is a console error)."""
    page = browser.new_page(viewport={"width": 960, "height": 680})
    problems = watch(page)
    page.goto(server_url, wait_until="load")
    page.locator("#model-info", has_text="parameters").wait_for()
    stroke(page, SEVEN)
    page.locator("#label", has_text="7").wait_for()
    assert "frame-ancestors 'none'" in page.request.get(server_url).headers["content-security-policy"]
    assert problems == []
    page.close()


def test_api_docs_render_without_a_network(browser, server_url):
    """/docs is Swagger UI from files the app serves itself (no CDN), listing the three routes."""
    page = browser.new_page()
    problems = []
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    page.on(
        "request",
        lambda request: (
            request.url.startswith(server_url)
            or request.url.startswith("data:")
            or problems.append(f"outside request: {request.url}")
        ),
    )
    page.goto(f"{server_url}/docs", wait_until="load")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.eval_on_selector_all(".opblock-summary-path", "paths => paths.map(path => path.textContent)")
    assert sorted(paths) == [
        "/api/explain",
        "/api/model",
        "/api/models",
        "/api/number",
        "/api/predict",
        "/api/weights",
        "/healthz",
    ]
    assert problems == []
    page.close()


def _keep(screenshot: Path) -> None:
    folder = os.environ.get("DIGITLAB_SCREENSHOTS")
    if folder:
        shutil.copyfile(screenshot, Path(folder) / screenshot.name)


def test_phone_upload_of_a_photo_shows_the_box_and_the_answer(browser, server_url, mnist, tmp_path):
    """At 390×844 with touch: the camera input is offered, a phone photo uploads, the box is outlined on it."""
    from digitlab.inference.realworld import phone_page

    picture, truth = phone_page(mnist.test.images[0, 0].numpy(), np.random.default_rng(2), size=(2000, 1500))
    photo = tmp_path / "photo.jpg"
    picture.save(photo, format="JPEG", quality=90)
    context = browser.new_context(
        bypass_csp=True,  # Playwright's wait_for_function evaluates strings; the policy itself: see below
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = context.new_page()
    problems = open_demo(page, server_url)
    assert page.get_attribute("#camera", "capture") == "environment"
    assert page.get_attribute("#camera", "accept") == "image/*" and page.is_visible("label[for=camera]")
    page.set_input_files("#upload", str(photo))
    result = settled_result(page)
    assert result["label"] == "7" and result["source"] == "from photo.jpg"
    page.wait_for_function("document.getElementById('pad').dataset.box !== undefined")
    box = [int(value) for value in page.evaluate("document.getElementById('pad').dataset.box").split(",")]
    assert all(abs(found - true) <= 20 for found, true in zip(box, truth, strict=False)), (box, truth)
    outline = page.evaluate(
        """box => {
        const pad = document.getElementById('pad'), scale = pad.width / 2000, top = (pad.height - 1500 * scale) / 2;
        const [r, g, b] = pad.getContext('2d').getImageData(Math.round(box[0] * scale - 2),
            Math.round((box[1] + box[3]) / 2 * scale + top), 1, 1).data;
        return [r, g, b];
    }""",
        box,
    )
    assert outline[0] > 200 and 100 < outline[1] < 200 and outline[2] < 80, outline  # the amber outline
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=tmp_path / "serve-phone-photo.png", full_page=True)
    assert problems == []
    context.close()
