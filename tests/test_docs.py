"""The documentation: the site builds with warnings as errors and fetches nothing, the Python examples of its
pages and of the README run, and the README's tables are the ones the results files give.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# A ```python block; `<!-- no-run -->` on the line before it keeps it out of the run (a server, npm, minutes).
BLOCK = re.compile(r"^(<!-- no-run -->\n)?```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def load_tables():
    """benchmarks/tables.py, which draws the tables from the results files."""
    if "tables" not in sys.modules:  # the dataclasses in it look their module up while it loads
        spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
        sys.modules["tables"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["tables"])
    return sys.modules["tables"]


def examples(page: Path) -> list[str]:
    """The Python blocks of a page that are meant to run, in order."""
    return [match[2] for match in BLOCK.finditer(page.read_text()) if not match[1]]


def test_the_readme_tables_are_the_ones_the_results_files_give():
    tables = load_tables()
    readme = (ROOT / "README.md").read_text()
    assert tables.marked_tables(readme), "the README shows no table from the results files"
    assert tables.fill(readme) == readme, "README tables are out of date: run python benchmarks/tables.py README.md"


def test_every_marked_table_exists_and_every_results_file_has_a_command():
    tables = load_tables()
    known = {*tables.TABLES, "results-files", "modules"}
    marked = {name for page in PAGES for name in tables.marked_tables(page.read_text())}
    assert marked <= known, f"pages mark tables that benchmarks/tables.py does not draw: {sorted(marked - known)}"
    written = {path.relative_to(ROOT).as_posix() for path in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert written <= set(tables.RESULT_COMMANDS), (
        f"results files without a command: {sorted(written - set(tables.RESULT_COMMANDS))}"
    )
    for name, table in tables.TABLES.items():
        assert set(table.sources) <= set(tables.RESULT_COMMANDS), name


def test_a_table_fills_its_marker_and_names_an_unknown_table():
    tables = load_tables()
    text = "before\n<!-- table: seed-recipe -->\nstale\n<!-- /table -->\nafter\n"
    filled = tables.fill(text)
    assert (
        "stale" not in filled and "| seed recipe, 20 epochs |" in filled and filled.endswith("<!-- /table -->\nafter\n")
    )
    with pytest.raises(KeyError, match="no table named 'nothing'"):
        tables.fill("<!-- table: nothing -->\n<!-- /table -->\n")


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    """The site, built as `make docs` builds it (--strict) into a temporary folder."""
    site = tmp_path_factory.mktemp("docs") / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return site


@pytest.mark.slow
def test_the_site_builds_strict_with_every_page(built_site):
    for page in ("index", "training", "serving", "reference/data", "reference/digitlab", "benchmarks/index"):
        assert (built_site / f"{page}.html").is_file(), page
    assert "digitlab.data.load_dataset" in (built_site / "reference" / "data.html").read_text()
    seed = load_tables().load("benchmarks/results/seed_recipe.json")
    assert f"{seed['speedup']:.1f}×" in (built_site / "benchmarks" / "training.html").read_text()  # from the JSON
    notebook = (built_site / "notebooks" / "seed.html").read_text()
    assert "jp-OutputArea-output" in notebook and "data:image/png;base64" in notebook  # shown with its outputs
    outside = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)
    for page in built_site.rglob("*.html"):
        text = page.read_text()
        assert not outside.search(text), f"{page.relative_to(built_site)} loads something from the internet"
        assert "cdnjs" not in text and "fonts.googleapis" not in text, page.relative_to(built_site)


@pytest.mark.slow
def test_the_site_reads_in_a_browser_without_the_internet(built_site, browser):
    from browsers import watch

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(built_site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        page = browser.new_page()
        problems = watch(page)
        elsewhere: list[str] = []
        page.on("request", lambda request: request.url.startswith(base) or elsewhere.append(request.url))
        for name in ("index", "notebooks/seed", "reference/runs", "benchmarks/index", "serving"):
            response = page.goto(base + f"{name}.html", wait_until="networkidle")
            assert response is not None and response.ok, name
        page.click("input.md-search__input")  # the search index is a local file too
        page.keyboard.type("segmenter")
        page.wait_for_selector(".md-search-result__item")
    finally:
        server.shutdown()
        server.server_close()
    assert elsewhere == [] and problems == []


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [page for page in PAGES if examples(page)], ids=lambda page: page.relative_to(ROOT).as_posix()
)
def test_the_python_examples_run(page, tmp_path, monkeypatch):
    """Each page's blocks run in order in one namespace, in a fresh folder (runs/ and the rest land there)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for number, code in enumerate(examples(page), 1):
        exec(compile(code, f"{page.relative_to(ROOT)} (python block {number})", "exec"), namespace)
