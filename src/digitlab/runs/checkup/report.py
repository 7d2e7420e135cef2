"""The doctor's page: FOLDER/index.html with each finding beside the picture of its evidence, the
pictures as PNGs and the findings as findings.json, every file written atomically."""

from __future__ import annotations

import functools
import html
from pathlib import Path

from ...files import atomic_write, make_folder, write_json
from .findings import Findings, findings_html

INDEX_FILE, FINDINGS_FILE = "index.html", "findings.json"
STYLE = "body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"


def write_checkup(findings: Findings, folder: str | Path, title: str, extra: dict | None = None) -> Path:
    """Write the page of `findings` (and findings.json, with `extra` keys beside "findings") into `folder`;
    return the path of its index.html. Figures shared by several findings are drawn once."""
    folder = Path(folder)
    make_folder(folder, "doctor's report folder")
    names: dict[object, str] = {}  # a draw function -> its file, so one figure serves several findings
    images: list[str | None] = []
    for number, finding in enumerate(findings):
        if finding.draw is None:
            images.append(None)
            continue
        if finding.draw not in names:
            figure = finding.draw()
            if figure is None:
                images.append(None)
                continue
            name = f"{number:02d}-{finding.check}.png"
            atomic_write(folder / name, functools.partial(figure.savefig, format="png"))
            names[finding.draw] = name
        images.append(names[finding.draw])
    write_json(folder / FINDINGS_FILE, {**findings.to_dict(), **(extra or {})})
    alarms = len(findings.alarms())
    summary = f"{alarms} warning(s) or problem(s), {len(findings) - alarms} note(s)" if findings else "no findings"
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<link rel="icon" href="data:,"><style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n'
        f"<p>{summary}</p>\n{findings_html(findings, images)}\n</body></html>\n"
    )
    index = folder / INDEX_FILE
    atomic_write(index, lambda temp: Path(temp).write_text(page, encoding="utf-8"))
    return index
