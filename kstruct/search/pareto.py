"""The plot of a search's Pareto fronts (accuracy against size, accuracy against latency);
the fronts themselves are computed in `result.py` (`pareto_front`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kstruct.search.result import SearchResult


def pareto_figure(result: "SearchResult | dict") -> "Figure":
    """The objective against file size and against latency: every trial a dot (filled when
    within budget), the front as a line, the budget as a dashed line. An Agg `Figure`.

    `result` is a `SearchResult`, or the `search` step's notes in a report (the same fields
    as `SearchResult.to_dict()`), which is how `Result.save` draws it after the search."""
    from kstruct.engine.plot_style import AFTER, new_figure

    summary = result if isinstance(result, dict) else result.to_dict()
    trials = summary["trials"]
    by_id = {trial["trial_id"]: trial for trial in trials}
    figure, axes = new_figure(1, 2, width=11, height=4.2)
    limits = summary["budget"]
    for ax, cost, label, scale in (
        (axes[0, 0], "tflite_bytes", "TFLite file (KiB)", 1 / 1024),
        (axes[0, 1], "latency_ms", "latency per image (ms, LiteRT CPU, 1 thread)", 1.0),
    ):
        measured = [t for t in trials if t["objective"] is not None and t[cost] is not None]
        for feasible, style in ((True, {"color": AFTER}), (False, {"facecolors": "none", "edgecolors": "tab:red"})):
            group = [t for t in measured if t["feasible"] == feasible]
            if group:
                ax.scatter([t[cost] * scale for t in group], [t["objective"] for t in group],
                           label="trial within budget" if feasible else "trial over budget", **style)
        front = [by_id[trial_id] for trial_id in summary["pareto"][cost]]
        if front:
            ax.plot([t[cost] * scale for t in front], [t["objective"] for t in front], "-", color="tab:gray",
                    label="Pareto front")
        if limits.get(cost) is not None:
            ax.axvline(limits[cost] * scale, linestyle="--", color="tab:red", label="budget")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{summary['objective']} (validation)")
    axes[0, 0].set_title("objective vs size", fontsize=10)
    axes[0, 1].set_title("objective vs latency", fontsize=10)
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(f"kstruct structure search: {len(trials)} trials, target {summary['target']}", fontsize=11)
    return figure


def plot_pareto(result: "SearchResult | dict", path: str | os.PathLike) -> str:
    """Writes `pareto_figure(result)` as a PNG; returns the path."""
    from kstruct.engine.plot_style import save

    return save(pareto_figure(result), path)
