"""A run as a compact HTML card, which Jupyter shows when a cell returns a Run (`Run._repr_html_`):
model, dataset, accuracies, size and time, a thumbnail of its training curves and its folder.

The thumbnail is drawn here with plain matplotlib, not with the figure modules a floor up: a card
is part of what a Run is, and those modules draw from runs.
"""

from __future__ import annotations

import base64
import html
import io

ACCURACY_COLOR, LOSS_COLOR = "#ff7f0e", "#1f77b4"  # the report's validation and training colours


def curves_thumbnail(history: list[dict]) -> bytes | None:
    """A 3×1.2 inch PNG: validation accuracy (or training accuracy without validation) and training
    loss per epoch, on two small axes without decoration; None without a history."""
    if not history:
        return None
    from matplotlib.figure import Figure  # here, so loading a run to predict does not load matplotlib
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in history]
    split = "val" if all(record.get("val_accuracy") is not None for record in history) else "train"
    figure = Figure(figsize=(3, 1.2), dpi=80, layout="constrained")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    accuracy_axes.plot(epochs, [record[f"{split}_accuracy"] for record in history], color=ACCURACY_COLOR)
    loss_axes.plot(epochs, [record["train_loss"] for record in history], color=LOSS_COLOR)
    for axes, title in ((accuracy_axes, f"{split} accuracy"), (loss_axes, "train loss")):
        axes.set_title(title, fontsize=8)
        axes.tick_params(labelsize=6, length=2)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def card_html(name: str, facts: list[tuple[str, str]], history: list[dict]) -> str:
    """The card: `name` as its heading, `facts` as label/value rows, the curves thumbnail beside them."""
    rows = "".join(
        f'<tr><th style="text-align:left;padding:1px 8px 1px 0;font-weight:normal;color:#666">{html.escape(label)}</th>'
        f'<td style="text-align:left;padding:1px 0">{html.escape(value)}</td></tr>'
        for label, value in facts
    )
    png = curves_thumbnail(history)
    picture = (
        f'<img alt="training curves" style="margin-left:12px" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        if png
        else ""
    )
    return (
        '<div style="display:inline-block;border:1px solid #ccc;border-radius:6px;padding:8px 12px;font-family:sans-serif">'
        f'<div style="font-weight:bold;margin-bottom:4px">{html.escape(name)}</div>'
        f'<div style="display:flex;align-items:center"><table style="border-collapse:collapse;font-size:13px">{rows}</table>'
        f"{picture}</div></div>"
    )
