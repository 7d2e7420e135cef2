"""Figures, drawn with `matplotlib.figure.Figure` (never pyplot): the house style (`style`) and the pictures
of predictions, data, model insides, explanations and tuning studies.
"""

from .style import InlineFigure, digit_grid, new_figure, styled

__all__ = [
    "InlineFigure",
    "digit_grid",
    "new_figure",
    "styled",
]
