"""What the doctor says about a run or a dataset: findings, each with its numbers, its fix and its picture.

A `Finding` names the check that made it, how bad it is (`info`, `warning` or `problem`), a sentence
with the numbers, those numbers as `evidence`, the command line to try as `fix`, and a function that
draws the evidence. `Findings` is the list a checkup returns: worst first, as JSON
(`{"findings": [...]}`), as lines for a terminal, and as HTML (each finding beside its picture) for
Jupyter and the doctor's report.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass

from matplotlib.figure import Figure

SEVERITIES = ("info", "warning", "problem")  # from the least to the most serious
ALARMS = ("warning", "problem")  # what a healthy run never gets


@dataclass
class Finding:
    """One thing the doctor noticed; `draw` (not part of the JSON) returns the figure of its evidence."""

    check: str  # which check spoke, e.g. "chance", "dead-units"
    severity: str  # info | warning | problem
    message: str  # what was seen, with its numbers
    evidence: dict  # the numbers that triggered it, JSON-ready
    fix: str = ""  # what to try: a command line where one exists
    draw: Callable[[], Figure | None] | None = None

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "evidence": self.evidence,
            "fix": self.fix,
        }

    @property
    def alarming(self) -> bool:
        return self.severity in ALARMS


class Findings(list):
    """The findings of one checkup, kept worst first (problems, then warnings, then info; stable within)."""

    def __init__(self, findings=()):
        super().__init__(sorted(findings, key=lambda finding: -SEVERITIES.index(finding.severity)))

    def alarms(self) -> list[Finding]:
        """The warnings and problems."""
        return [finding for finding in self if finding.alarming]

    def checks(self, severities=ALARMS) -> set[str]:
        """The names of the checks that spoke at one of `severities`."""
        return {finding.check for finding in self if finding.severity in severities}

    def to_dict(self) -> dict:
        return {"findings": [finding.to_dict() for finding in self]}

    def lines(self) -> list[str]:
        """One line per finding (its fix on a second, indented line), for a terminal."""
        lines = []
        for finding in self:
            lines.append(f"{finding.severity:<7} {finding.check}: {finding.message}")
            if finding.fix:
                lines.append(f"        try: {finding.fix}")
        return lines or ["no findings"]

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        """Jupyter's view: each finding beside the picture of its evidence (PNG inline)."""
        return findings_html(self, [_png_data_url(finding) for finding in self])


SEVERITY_COLORS = {"info": "#555555", "warning": "#b8860b", "problem": "#c62828"}


def findings_html(findings: list[Finding], images: list[str | None]) -> str:
    """HTML blocks, one per finding: severity, check, message, fix, and its picture (the URL in `images`)."""
    blocks = []
    for finding, url in zip(findings, images, strict=True):
        color = SEVERITY_COLORS[finding.severity]
        fix = f"<p>try: <code>{html.escape(finding.fix)}</code></p>" if finding.fix else ""
        picture = f'<img src="{html.escape(url)}" style="max-width:640px" alt="{finding.check}">' if url else ""
        blocks.append(
            f'<div style="display:flex;gap:1.5em;align-items:flex-start;margin:1em 0;border-left:4px solid {color};'
            f'padding-left:0.8em"><div style="max-width:36em"><p><strong style="color:{color}">{finding.severity}'
            f"</strong> <code>{html.escape(finding.check)}</code></p><p>{html.escape(finding.message)}</p>{fix}"
            f"</div>{picture}</div>"
        )
    return "\n".join(blocks) or "<p>no findings</p>"


def _png_data_url(finding: Finding) -> str | None:
    figure = finding.draw() if finding.draw else None
    if figure is None:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass(frozen=True)
class Commands:
    """The command lines a run's fixes name: retraining it with a change, or its learning-rate range test."""

    run: str | None  # the run folder, or None for a run that has none
    model: str
    out_given: bool = False  # its config names its folder (--out): a retrain must name another

    def train(self, **flags) -> str:
        """`digitlab train` from this run's config with `flags` changed (True: a switch; else its value)."""
        command = (
            f"digitlab train --config {self.run}/config.json" if self.run else f"digitlab train --model {self.model}"
        )
        command += "".join(_flag(name, value) for name, value in flags.items())
        return command + (f" --out {self.run}-2" if self.run and self.out_given else "")

    def lr_find(self) -> str:
        source = f"--config {self.run}/config.json" if self.run else f"--model {self.model}"
        return f"digitlab lr-find {source}"


def _flag(name: str, value) -> str:
    flag = " --" + name.replace("_", "-")
    return flag if value is True else f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"
