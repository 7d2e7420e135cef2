"""MkDocs hooks for digitlab's site: the tables drawn from the results files, the notebooks, the module map.

- A page's `<!-- table: NAME -->` ... `<!-- /table -->` gets the table benchmarks/tables.py draws from the
  results files as they are now, so a figure on the site is always the one in its file; `<!-- table:
  results-files -->` lists every results file with the command that writes it and the pages that show it,
  and a results file that no page shows is a warning (an error under `mkdocs build --strict`).
- `<!-- table: modules -->` lists every module of the package with the first line of its docstring.
- experiments/augmentation/plot.png is served at the same path, for the page of models.
- The notebooks in notebooks/ become pages (notebooks/NAME.ipynb), rendered by mkdocs-jupyter with their
  committed outputs; the Mermaid loader its template carries (dead code: no notebook draws a diagram) and
  an empty MathJax script tag are dropped, so no page refers to a CDN.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "src")]  # this checkout's tables and package

import tables  # noqa: E402  (benchmarks/tables.py, found through the path set just above)

AUGMENTATION_PLOT = ROOT / "experiments" / "augmentation" / "plot.png"  # drawn by digitlab experiment augmentation
log = logging.getLogger("mkdocs.plugins.digitlab")
# nbconvert's template: a Mermaid loader from a CDN (dead code, no notebook draws a diagram) and an empty
# MathJax <script src="">, both dropped from the notebook pages
NOTEBOOK_LEFTOVERS = re.compile(
    r'<script type="module">(?:(?!</script>).)*?jp-Mermaid(?:(?!</script>).)*</script>|<script src=""> </script>',
    re.DOTALL,
)
SHOWN: dict[str, list[tuple[str, str]]] = {}  # results file -> (page title, page path) of the pages that show it


@event_priority(100)  # before mkdocs-jupyter looks for notebooks among the files
def on_files(files: Files, config) -> Files:
    for path in [*sorted((ROOT / "notebooks").glob("*.ipynb")), AUGMENTATION_PLOT]:
        relative = path.relative_to(ROOT).as_posix()
        files.append(File(relative, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    SHOWN.clear()
    for page in files.documentation_pages():
        if not page.src_uri.endswith(".md"):
            continue
        for name in tables.marked_tables(Path(page.abs_src_path).read_text()):
            for source in tables.TABLES[name].sources if name in tables.TABLES else ():
                SHOWN.setdefault(source, []).append((_title(page), page.src_uri))
    written = {path.relative_to(ROOT).as_posix() for path in (ROOT / "benchmarks" / "results").glob("*.json")}
    for source in sorted(written - set(tables.RESULT_COMMANDS)):
        log.warning(f"{source}: no command for it in RESULT_COMMANDS of benchmarks/tables.py, and no table")
    for source in sorted(set(tables.RESULT_COMMANDS) - set(SHOWN)):
        log.warning(f"{source} is shown on no page: mark one of its tables with <!-- table: NAME -->")
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    for name in tables.marked_tables(markdown):
        if name not in (*tables.TABLES, "results-files", "modules"):
            log.warning(f"{page.file.src_uri}: no table named {name!r} (benchmarks/tables.py names them)")
    markdown = markdown.replace(
        "<!-- table: results-files -->\n", "<!-- table: results-files -->\n" + _results_files(page)
    )
    markdown = markdown.replace("<!-- table: modules -->\n", "<!-- table: modules -->\n" + _modules())
    return tables.MARKER.sub(
        lambda match: match[1] + (tables.render(match[2]) if match[2] in tables.TABLES else match[3]) + match[4],
        markdown,
    )


def on_post_page(output: str, page, config) -> str:
    return NOTEBOOK_LEFTOVERS.sub("", output) if page.file.src_uri.endswith(".ipynb") else output


def _title(page: File) -> str:
    first = Path(page.abs_src_path).read_text().lstrip().splitlines()[0]
    return first.lstrip("# ").strip()


def _results_files(page) -> str:
    depth = page.file.src_uri.count("/")
    rows = ["| results file | written by | date | shown on |", "| --- | --- | --- | --- |"]
    for source, command in tables.RESULT_COMMANDS.items():
        shown = ", ".join(f"[{title}]({'../' * depth}{uri})" for title, uri in dict.fromkeys(SHOWN.get(source, [])))
        rows.append(f"| `{source}` | `{command}` | {_date(source)} | {shown or '—'} |")
    return "\n".join(rows) + "\n"


def _date(source: str) -> str:
    data = tables.load(source)
    return str(data.get("date", "—"))


def _modules() -> str:
    package = ROOT / "src" / "digitlab"
    rows = ["| module | what it holds |", "| --- | --- |"]
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        rows.append(f"| `{name}` | {docstring.split(chr(10) + chr(10))[0].replace(chr(10), ' ').replace('|', '/')} |")
    return "\n".join(rows) + "\n"
