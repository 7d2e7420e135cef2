"""The report in a real browser: headless Debian chromium, driven by Playwright, over a local HTTP server."""

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from digitlab.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium (.ci/run installs it with apt)"
)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served_report(seed_run, tmp_path_factory):
    """The report of a copy of the 1-epoch seed run, served on 127.0.0.1; yields (URL, report folder)."""
    folder = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(seed_run.path, folder)
    index = write_report(folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(index.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{index.name}", index.parent
    finally:
        server.shutdown()
        server.server_close()


def test_every_image_loads_without_console_errors(served_report):
    from playwright.sync_api import sync_playwright

    url, folder = served_report
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
            page.on(
                "response",
                lambda response: response.status >= 400 and problems.append(f"HTTP {response.status}: {response.url}"),
            )
            response = page.goto(url, wait_until="load")
            assert response is not None and response.ok
            images = page.evaluate("""() => Array.from(document.images).map(image => ({
                src: image.getAttribute('src'), complete: image.complete,
                width: image.naturalWidth, height: image.naturalHeight}))""")
            title = page.title()
            headings = page.eval_on_selector_all("h2", "elements => elements.map(element => element.textContent)")
            table_rows = page.eval_on_selector_all("table tbody tr", "rows => rows.length")
        finally:
            browser.close()
    assert problems == []
    assert sorted(image["src"] for image in images) == sorted(path.name for path in folder.glob("*.png"))
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert title.startswith("digitlab report")
    assert headings == [
        "Data",
        "Training",
        "Prediction confidence on the test set",
        "Confusion matrix",
        "Calibration",
        "Inside the model",
        "Most-confused pairs",
    ]
    assert table_rows == 10 + 5  # the per-class table and the most-confused pairs
