"""The network view in a real browser: `digitlab serve MLP CNN` in a subprocess, headless Debian chromium.

Draw a 7 and a 1 and check that the hidden layers (MLP) and the feature maps (CNN) change, that
hovering a unit shows its weight image, that the saliency overlay appears and can be switched to
another class, and that two models compare side by side. Screenshots go to the test's tmp folder;
set DIGITLAB_SCREENSHOTS=docs/images to regenerate the README's (serve-explain-mlp.png,
serve-explain-cnn.png) on purpose.
"""

import re
import subprocess
import sys
import urllib.request

import pytest

from digitlab.runs.shipped import SHIPPED_MODEL
from test_serve_browser import SEVEN, VERTICAL, _keep, open_demo, settled_result, stroke

pytestmark = pytest.mark.browser
CNN = SHIPPED_MODEL.stem


@pytest.fixture(scope="module")
def two_models_url(seed_run):
    """`digitlab serve SEED_MLP SHIPPED_CNN --port 0` on 127.0.0.1; yields its URL once /healthz answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "digitlab", "serve", str(seed_run.path), str(SHIPPED_MODEL), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line + server.stderr.read()
        with urllib.request.urlopen(f"{match[0]}/healthz", timeout=10) as response:
            assert response.status == 200
        yield match[0]
    finally:
        server.terminate()
        server.wait(10)


def drawn_view(page, path, view=0):
    """Clear, draw `path`, wait until view number `view` shows the answer; returns (label, its inside)."""
    page.click("#clear")
    stroke(page, path)
    label = settled_result(page)["label"]
    selector = f".view:nth-child({view + 1})"
    page.wait_for_function(f"document.querySelector('{selector}')?.dataset.label !== undefined")
    inside = page.evaluate(
        """selector => {
        const view = document.querySelector(selector);
        const saliency = view.querySelector('.saliency').getContext('2d').getImageData(0, 0, 28, 28).data;
        let coloured = 0;
        for (let i = 0; i < saliency.length; i += 4) {  // not gray: the attribution's red or blue
            const [r, g, b] = saliency.slice(i, i + 3);
            if (Math.max(Math.abs(r - g), Math.abs(g - b), Math.abs(r - b)) > 30) coloured += 1;
        }
        return {
            label: view.dataset.label,
            units: Array.from(view.querySelectorAll('.unit, .cell:not(.output)')).map(unit => unit.dataset.value),
            maps: Array.from(view.querySelectorAll('.map')).map(map => map.dataset.sum),
            top: Array.from(view.querySelectorAll('.top3 li')).map(item => item.textContent),
            coloured,
            why: view.querySelector('.why-class').textContent,
        };
    }""",
        selector,
    )
    return label, inside


def hover_shows_weights(page, unit_selector):
    """Hover a first-layer unit; the detail panel shows its weight image large, with some colour in it."""
    page.hover(unit_selector)
    page.wait_for_function("!document.querySelector('.view .detail').hidden")
    return page.evaluate("""() => {
        const detail = document.querySelector('.view .detail');
        const pixels = detail.querySelector('.detail-weight').getContext('2d').getImageData(0, 0, 28, 28).data;
        return {unit: detail.dataset.unit, text: detail.querySelector('.detail-text').textContent,
                width: detail.querySelector('.detail-weight').getBoundingClientRect().width,
                coloured: pixels.some((value, index) => index % 4 === 0 && value < 250)};
    }""")


def test_mlp_view_follows_the_drawing(browser, two_models_url, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900}, bypass_csp=True)  # Playwright's waits eval
    problems = open_demo(page, two_models_url)
    page.wait_for_selector(".view")
    seven_label, seven = drawn_view(page, SEVEN)
    one_label, one = drawn_view(page, VERTICAL)
    assert one_label == "1" == one["label"] and seven["label"] == seven_label
    assert len(seven["units"]) == 32 + 16 and seven["units"] != one["units"]
    assert seven["maps"] == [] and len(one["top"]) == 3 and one["top"][0].startswith("1:")
    assert one["coloured"] > 20 and one["why"] == "1"
    detail = hover_shows_weights(page, ".view .unit >> nth=4")
    assert detail["unit"] == "4" and detail["coloured"] and detail["width"] >= 100 and "activation" in detail["text"]
    page.click(".view .why-classes button[data-class='3']")
    page.wait_for_function("document.querySelector('.view .why-class').textContent === '3'")
    page.screenshot(path=tmp_path / "serve-explain-mlp.png", full_page=True)
    page.check("#number-mode")  # a whole number goes to /api/number: the view says it has nothing to show
    page.wait_for_function("document.querySelector('.view .view-status').textContent.includes('whole number')")
    assert page.evaluate("document.querySelectorAll('.view .unit').length") == 0
    assert problems == []
    page.close()
    _keep(tmp_path / "serve-explain-mlp.png")


def test_cnn_view_and_a_comparison(browser, two_models_url, seed_run, tmp_path):
    page = browser.new_page(viewport={"width": 1300, "height": 900}, bypass_csp=True)  # as above
    problems = open_demo(page, two_models_url)
    page.select_option("#model", CNN)
    page.wait_for_function(f"document.querySelector('.view')?.dataset.model === '{CNN}'")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('cnn')")
    seven_label, seven = drawn_view(page, SEVEN)
    one_label, one = drawn_view(page, VERTICAL)
    assert (seven_label, one_label) == ("7", "1")
    assert len(seven["maps"]) == sum((24, 48, 96)) and seven["maps"] != one["maps"]
    assert seven["coloured"] > 20 and seven["why"] == "7"
    detail = hover_shows_weights(page, ".view .unit.filter >> nth=2")
    assert detail["unit"] == "2" and detail["coloured"] and "mean activation" in detail["text"]
    page.select_option("#compare", seed_run.path.name)
    page.wait_for_selector(".view:nth-child(2)")
    label, mlp = drawn_view(page, SEVEN, view=1)
    assert label == "7" and len(mlp["units"]) == 48 and mlp["coloured"] > 20
    page.screenshot(path=tmp_path / "serve-explain-cnn.png", full_page=True)
    assert problems == []
    page.close()
    _keep(tmp_path / "serve-explain-cnn.png")
