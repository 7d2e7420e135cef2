"""Figures of a tuning study, drawn with matplotlib: each function takes plain trial records and returns a Figure.

A record is `digitlab.tuning.tune.trial_record(trial)`: number, state ("complete", "pruned", "fail",
"running"), value (validation accuracy; for a pruned trial the last one it reported), params and
curve ({epoch: validation accuracy}). Figures use the house style of `digitlab.figures`.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .style import VAL_COLOR, new_figure, note_figure, styled

PRUNED_COLOR, BEST_COLOR = "#9a9a9a", "#d62728"


def _complete(records: list[dict]) -> list[dict]:
    return [record for record in records if record["state"] == "complete" and record["value"] is not None]


@styled
def optimization_history(records: list[dict]) -> Figure:
    """Validation accuracy of every finished trial by trial number, with the running best as a step line."""
    complete = _complete(records)
    if not complete:
        return note_figure("Optimisation history", "no complete trials yet")
    figure = new_figure(8, 4.2)
    figure.suptitle("Optimisation history")
    axes = figure.add_subplot()
    pruned = [record for record in records if record["state"] == "pruned" and record["value"] is not None]
    if pruned:
        axes.scatter(
            [r["number"] for r in pruned],
            [r["value"] for r in pruned],
            marker="x",
            color=PRUNED_COLOR,
            label="pruned (last reported)",
            zorder=2,
        )
    axes.scatter(
        [r["number"] for r in complete], [r["value"] for r in complete], color=VAL_COLOR, label="complete", zorder=3
    )
    numbers: list[int] = []
    best: list[float] = []
    for record in sorted(complete, key=lambda r: r["number"]):
        numbers.append(record["number"])
        best.append(max(record["value"], best[-1]) if best else record["value"])
    last = max(record["number"] for record in records)
    axes.step([*numbers, last], [*best, *best[-1:]], where="post", color=BEST_COLOR, label="best so far", zorder=4)
    axes.set_xlabel("trial")
    axes.set_ylabel("validation accuracy")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    _zoom_on(axes, [r["value"] for r in complete])
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return figure


def _zoom_on(axes, values: list[float]) -> None:
    """Keep the y range on the complete trials, so one diverged trial does not flatten the rest."""
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 0.002)
    axes.set_ylim(max(low - pad, 0.0), min(high + pad, 1.0))


@styled
def param_importances(importances: dict[str, float] | str) -> Figure:
    """Horizontal bars of each parameter's importance (summing to 1); a note (the string) if there is none."""
    if isinstance(importances, str) or not importances:
        return note_figure("Parameter importances", importances or "no searched parameters")
    names = list(importances)[::-1]  # most important on top
    figure = new_figure(7, 0.45 * len(names) + 1.4)
    figure.suptitle("Parameter importances (PED-ANOVA)")
    axes = figure.add_subplot()
    values = [importances[name] for name in names]
    axes.barh(names, values, color=VAL_COLOR)
    for position, value in enumerate(values):
        axes.text(value, position, f" {value:.2f}", va="center", fontsize=9)
    axes.set_xlabel("importance: how the top 10% of trials differ from all in this parameter (sums to 1)")
    axes.set_xlim(0, max(values) * 1.15 or 1)
    return figure


def _positions(values: list, distribution) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values mapped to [0, 1] along one axis, and (position, label) ticks for it."""
    if hasattr(distribution, "choices"):
        choices = list(distribution.choices)
        spread = max(len(choices) - 1, 1)
        return (
            np.array([choices.index(value) / spread for value in values]),
            [(index / spread, str(choice)) for index, choice in enumerate(choices)],
        )
    low, high = distribution.low, distribution.high
    scale = math.log10 if distribution.log else float
    span = (scale(high) - scale(low)) or 1.0
    ticks = [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")]
    return np.array([(scale(value) - scale(low)) / span for value in values]), ticks


@styled
def parallel_coordinates(records: list[dict], distributions: dict) -> Figure:
    """One line per complete trial through an axis per parameter (log axes where the range is log) and its
    validation accuracy; lines coloured by accuracy, the best in red."""
    complete = [r for r in _complete(records) if set(distributions) <= set(r["params"])]
    names = sorted(distributions)
    if not complete or not names:
        return note_figure("Parallel coordinates", "no complete trials with searched parameters yet")
    columns = [_positions([r["params"][name] for r in complete], distributions[name]) for name in names]
    values = np.array([r["value"] for r in complete])
    low, high = values.min(), values.max()
    columns.append(((values - low) / ((high - low) or 1.0), [(0.0, f"{low:.2%}"), (1.0, f"{high:.2%}")]))
    figure = new_figure(max(8, 1.3 * len(columns)), 4.6)
    figure.suptitle("Parallel coordinates of the complete trials")
    axes = figure.add_subplot()
    data = np.stack([column[0] for column in columns], 1)  # (trials, axes)
    colormap, norm = colormaps["viridis"], Normalize(low, high if high > low else low + 1e-9)
    best = int(values.argmax())
    for row in np.argsort(values):
        axes.plot(
            range(len(columns)),
            data[row],
            color=BEST_COLOR if row == best else colormap(norm(values[row])),
            linewidth=2.5 if row == best else 1.0,
            alpha=1.0 if row == best else 0.7,
            zorder=3 if row == best else 2,
        )
    for position, (_, ticks) in enumerate(columns):
        axes.axvline(position, color="#444444", linewidth=0.8, zorder=1)
        for height, label in ticks:
            axes.text(position + 0.04, height, label, fontsize=8, va="center", color="#333333")
    axes.set_xticks(range(len(columns)), [*names, "val accuracy"], rotation=20)
    axes.set_yticks([])
    axes.set_xlim(-0.2, len(columns) - 0.5)
    axes.set_ylim(-0.05, 1.05)
    axes.spines[["left", "bottom"]].set_visible(False)
    colorbar = figure.colorbar(_mappable(colormap, norm), ax=axes, pad=0.01)
    colorbar.set_label("validation accuracy")
    colorbar.formatter = PercentFormatter(1.0)
    colorbar.update_ticks()
    return figure


def _mappable(colormap, norm):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=colormap)


@styled
def learning_curves(records: list[dict]) -> Figure:
    """Validation accuracy after each epoch of every trial: where the pruner stopped trials (grey) early."""
    drawn = [record for record in records if record["curve"]]
    if not drawn:
        return note_figure("Learning curves", "no trial has reported an epoch yet")
    figure = new_figure(8, 4.2)
    figure.suptitle("Validation accuracy per epoch (pruned trials in grey)")
    axes = figure.add_subplot()
    complete = _complete(records)
    best = max(complete, key=lambda r: r["value"])["number"] if complete else None
    for record in drawn:
        epochs, accuracy = list(record["curve"]), list(record["curve"].values())
        if record["number"] == best:
            axes.plot(
                epochs,
                accuracy,
                color=BEST_COLOR,
                linewidth=2.5,
                marker="o",
                markersize=4,
                zorder=3,
                label=f"best (trial {best})",
            )
        elif record["state"] == "complete":
            axes.plot(epochs, accuracy, color=VAL_COLOR, alpha=0.6, linewidth=1.0, zorder=2)
        else:
            axes.plot(epochs, accuracy, color=PRUNED_COLOR, alpha=0.7, linewidth=1.0, marker="x", markersize=4)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if complete:
        final = [r["value"] for r in complete]
        axes.set_ylim(max(min(final) - 0.1, 0.0), min(max(final) + 0.01, 1.0))
        axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    return figure
