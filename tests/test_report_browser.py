"""The report in a real browser: headless Debian chromium, driven by Playwright, over a local HTTP server."""

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from browsers import chromium, watch
from digitlab.runs.report import write_report

pytestmark = pytest.mark.browser


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
    url, folder = served_report
    with chromium() as browser:
        page = browser.new_page()
        problems = watch(page)
        response = page.goto(url, wait_until="load")
        assert response is not None and response.ok
        images = page.evaluate("""() => Array.from(document.images).map(image => ({
            src: image.getAttribute('src'), complete: image.complete,
            width: image.naturalWidth, height: image.naturalHeight}))""")
        title = page.title()
        headings = page.eval_on_selector_all("h2", "elements => elements.map(element => element.textContent)")
        table_rows = page.eval_on_selector_all("table tbody tr", "rows => rows.length")
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
        "Why the model decides",
        "Most-confused pairs",
    ]
    assert table_rows == 10 + 5  # the per-class table and the most-confused pairs
