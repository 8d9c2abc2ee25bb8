"""One look for every kstruct figure: Agg-only `Figure` objects, never pyplot's global state.

Building `matplotlib.figure.Figure` directly with an Agg canvas leaves the user's
backend and open pyplot windows alone, and works on machines with no display.
"""

from __future__ import annotations

import os

BEFORE, AFTER = "#9e9e9e", "#1f77b4"  # before/after bars: grey, then the kstruct blue
DPI = 110


def new_figure(rows: int, cols: int, *, width: float, height: float):
    """A `(Figure, axes array)` on an Agg canvas, with the kstruct defaults."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    return figure, axes


def note(ax, text: str) -> None:
    """Writes `text` in the middle of an empty panel (rather than leaving it blank)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


def save(figure, path: str | os.PathLike) -> str:
    """Writes `figure` as a PNG at the kstruct resolution; returns the path."""
    figure.savefig(path, dpi=DPI)
    return str(path)
