"""The plot of a search's Pareto fronts (accuracy against size, accuracy against latency);
the fronts themselves are computed in `result.py` (`pareto_front`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kstruct.search.result import SearchResult


def pareto_figure(result: "SearchResult") -> "Figure":
    """The objective against file size and against latency: every trial a dot (filled when
    within budget), the front as a line, the budget as a dashed line. An Agg `Figure`."""
    from kstruct.engine.plot_style import AFTER, new_figure

    figure, axes = new_figure(1, 2, width=11, height=4.2)
    limits = result.budget.limits()
    for ax, cost, label, front, scale in (
        (axes[0, 0], "tflite_bytes", "TFLite file (KiB)", result.pareto_size, 1 / 1024),
        (axes[0, 1], "latency_ms", "latency per image (ms, LiteRT CPU, 1 thread)", result.pareto_latency, 1.0),
    ):
        measured = [t for t in result.trials if t.objective is not None and getattr(t, cost) is not None]
        for feasible, style in ((True, {"color": AFTER}), (False, {"facecolors": "none", "edgecolors": "tab:red"})):
            group = [t for t in measured if t.feasible == feasible]
            if group:
                ax.scatter([getattr(t, cost) * scale for t in group], [t.objective for t in group],
                           label="trial within budget" if feasible else "trial over budget", **style)
        if front:
            ax.plot([getattr(t, cost) * scale for t in front], [t.objective for t in front], "-", color="tab:gray",
                    label="Pareto front")
        if cost in limits:
            ax.axvline(limits[cost] * scale, linestyle="--", color="tab:red", label="budget")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{result.objective} (validation)")
    axes[0, 0].set_title("objective vs size", fontsize=10)
    axes[0, 1].set_title("objective vs latency", fontsize=10)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(f"kstruct structure search: {len(result.trials)} trials, target {result.target}", fontsize=11)
    return figure


def plot_pareto(result: "SearchResult", path: str | os.PathLike) -> str:
    """Writes `pareto_figure(result)` as a PNG; returns the path."""
    from kstruct.engine.plot_style import save

    return save(pareto_figure(result), path)
