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


def __getattr__(name: str):
    """The figure modules (`digitlab.figures.predictions`, ...) imported when first named: they load matplotlib."""
    from ..faces import submodule

    return submodule(__name__, name)
