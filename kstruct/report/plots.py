"""The figures of a report: what each stage cost and bought, per layer, and per epoch.

Every figure is drawn from the report's own data (`Report.to_dict()`), so the
pictures and `report.json` always agree. Figures are Agg `Figure` objects; nothing
here touches pyplot or the user's backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kstruct.engine.plot_style import AFTER, BEFORE, new_figure, note, save

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kstruct.report.table import Report

__all__ = ["FIGURES", "figures", "save_figures", "stages_figure", "layers_figure", "training_figure", "auto_figure"]

FIGURES = ("stages", "layers", "training")  # and "auto" or "pareto" when the strategy ran `auto` or `search`


def _data(report) -> dict:
    return report if isinstance(report, dict) else report.to_dict()


def stages_figure(report: "Report | dict") -> "Figure":
    """Accuracy of each stage against its gzipped TFLite size and against its latency."""
    data = _data(report)
    stages = data["stages"]
    names = [s["stage"] for s in stages]
    figure, axes = new_figure(1, 2, width=11, height=4.2)
    for ax, key, label, scale in (
        (axes[0, 0], "tflite_gzip_bytes", "TFLite file, gzipped (KiB)", 1 / 1024),
        (axes[0, 1], "latency_ms", "latency per image (ms, LiteRT CPU, 1 thread)", 1.0),
    ):
        x = [s[key] * scale for s in stages]
        for accuracy, style, legend in (
            ("tflite_accuracy", {"marker": "o", "color": AFTER}, f"{data['target']} TFLite accuracy"),
            ("keras_accuracy", {"marker": "s", "color": BEFORE, "linestyle": ":", "markerfacecolor": "none"},
             "Keras accuracy"),
        ):
            points = [(xi, s[accuracy]) for xi, s in zip(x, stages) if s[accuracy] is not None]
            if points:
                ax.plot(*zip(*points), label=legend, **style)
        for xi, s, name in zip(x, stages, names):
            if s["tflite_accuracy"] is not None:
                ax.annotate(name, (xi, s["tflite_accuracy"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (validation)")
        ax.margins(y=0.12)
        # From zero, so a saving reads in proportion (not timer noise blown up); room for the names.
        ax.set_xlim(0, 1.35 * max(x) if x and max(x) > 0 else 1.0)
    axes[0, 0].set_title("accuracy vs size (lines join the stages in order)", fontsize=10)
    axes[0, 1].set_title("accuracy vs latency", fontsize=10)
    if axes[0, 0].get_lines():  # a regression report has no accuracy to draw
        axes[0, 0].legend(fontsize=8, loc="best")
    figure.suptitle(f"kstruct stages: {data['strategy']} (target {data['target']})", fontsize=11)
    return figure


_LAYER_PANELS = (
    ("sparsity", "kernel sparsity (%)", 100.0, "linear"),
    ("live_channels", "output channels with a non-zero weight", 1.0, "linear"),
    ("distinct_values", "distinct kernel values", 1.0, "log"),
)


def layers_figure(report: "Report | dict") -> "Figure":
    """Per layer, before (the original model) and after (the final one): sparsity, live channels, distinct values."""
    rows = _data(report).get("layers") or []
    figure, axes = new_figure(len(_LAYER_PANELS), 1, width=max(7.0, 1.1 * len(rows) + 3), height=8)
    names = [row["layer"] for row in rows]
    positions = range(len(rows))
    for ax, (key, label, scale, yscale) in zip(axes[:, 0], _LAYER_PANELS):
        if not rows:
            note(ax, "no prunable layers")
            continue
        for offset, when, color in ((-0.2, "before", BEFORE), (0.2, "after", AFTER)):
            values = [0 if row[when] is None else row[when][key] * scale for row in rows]
            bars = ax.bar([p + offset for p in positions], values, width=0.4, color=color,
                          label="original model" if when == "before" else "final model")
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
        ax.set_ylabel(label, fontsize=9)
        ax.set_yscale(yscale)
        ax.set_xticks(list(positions), names if ax is axes[-1, 0] else [""] * len(names), rotation=30, ha="right")
        ax.margins(y=0.15)
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].set_ylim(0, 110)
    figure.suptitle("kstruct layers: before and after", fontsize=11)
    return figure


def training_series(stage: dict) -> dict[str, list[float]]:
    """The per-epoch label loss and accuracy of one stage (the label loss, not the
    Distiller's total, so distilled and plain steps compare)."""
    history = stage.get("notes", {}).get("history") or {}
    loss = history.get("student_loss") or history.get("loss") or []
    return {"loss": list(loss), "accuracy": list(history.get(_accuracy_key(history)) or [])}


def _accuracy_key(history: dict) -> str:
    """`accuracy`, or for a multi-output model the first output's (Keras names it `<output>_accuracy`)."""
    if "accuracy" in history:
        return "accuracy"
    return next((key for key in history if key.endswith("_accuracy") and not key.startswith("val_")), "accuracy")


def training_figure(report: "Report | dict") -> "Figure":
    """Label loss and accuracy per epoch of every training step (from Keras's History),
    the steps one after the other on one epoch axis, so the whole run reads left to right."""
    stages = [s for s in _data(report)["stages"] if training_series(s)["loss"]]
    figure, axes = new_figure(1, 2, width=11, height=4.2)
    total = sum(len(training_series(s)["loss"]) for s in stages)
    for ax, key, label in ((axes[0, 0], "loss", "training loss (labels)"), (axes[0, 1], "accuracy", "training accuracy")):
        if not stages:
            note(ax, "no training step in this strategy")
            continue
        start = 1
        for stage in stages:
            values = training_series(stage)[key]
            if values:
                ax.plot(range(start, start + len(values)), values, marker="o", label=stage["stage"])
            start += len(training_series(stage)["loss"])
        ax.set_xlabel("epoch (training steps in strategy order)")
        ax.set_ylabel(label)
        if total <= 30:
            ax.set_xticks(range(1, total + 1))
        ax.margins(x=0.08)
        if ax.get_lines():
            ax.legend(fontsize=8)
        else:  # a regression model's steps record no accuracy
            note(ax, f"no {label} recorded")
    axes[0, 0].set_title("loss per epoch", fontsize=10)
    axes[0, 1].set_title("accuracy per epoch", fontsize=10)
    figure.suptitle("kstruct training steps", fontsize=11)
    return figure


def auto_notes(report: "Report | dict") -> dict | None:
    """The notes of the report's `auto` stage, or None."""
    for stage in _data(report)["stages"]:
        if "auto" in stage.get("notes", {}):
            return stage["notes"]["auto"]
    return None


def auto_figure(report: "Report | dict") -> "Figure":
    """`auto`'s trials: the metric against latency and against gzipped size, the budget's limits
    drawn, the chosen trial marked; trials refused before training sit on the axis below."""
    notes = auto_notes(report)
    figure, axes = new_figure(1, 2, width=11, height=4.2)
    if notes is None:
        for ax in axes[0]:
            note(ax, "no auto stage in this strategy")
        return figure
    rows, original, budget, best = notes["trials"], notes["original"], notes["budget"], notes["best_trial"]
    trained = [row for row in rows if row["metric"] is not None]
    floor = min([row["metric"] for row in trained] + [original["metric"] or 0.0]) - 0.02
    limits = {
        "latency_ms": budget.get("latency_ms") or (
            original["latency_ms"] / budget["speedup"] if budget.get("speedup") else None),
        "gzip_bytes": original["gzip_bytes"] / budget["compression"] if budget.get("compression") else None,
    }
    for ax, key, label, scale in ((axes[0, 0], "latency_ms", "latency per image (ms, LiteRT, 1 thread)", 1.0),
                                  (axes[0, 1], "gzip_bytes", "TFLite file, gzipped (KiB)", 1 / 1024)):
        for status, style in (("feasible", {"color": AFTER, "marker": "o"}),
                              ("over budget", {"color": BEFORE, "marker": "x"}),
                              ("over budget untrained", {"color": "0.6", "marker": "|"})):
            points = [(row[key] * scale, row["metric"] if row["metric"] is not None else floor)
                      for row in rows if row["status"] == status and row[key] is not None]
            if points:
                ax.scatter(*zip(*points), label=status, **style)
        ax.scatter([original[key] * scale], [original["metric"]], marker="s", color="black", label="original")
        ax.scatter([best[key] * scale], [best["metric"]], marker="*", s=200, color=AFTER, edgecolor="black",
                   label="chosen")
        if limits[key] is not None:
            ax.axvline(limits[key] * scale, color="0.3", linestyle="--", linewidth=1, label="budget")
        if original["metric"] is not None:
            ax.axhline(original["metric"] - budget["max_accuracy_drop"], color="0.3", linestyle=":", linewidth=1,
                       label="max accuracy drop")
        ax.set_xlabel(label)
        ax.set_ylabel("metric (validation, TFLite)")
        ax.set_xlim(left=0)
    axes[0, 0].legend(fontsize=7, loc="best")
    figure.suptitle(f"kstruct auto: {len(rows)} trials, chose {notes['strategy'] or '(no step)'}"[:140], fontsize=10)
    return figure


def search_notes(report: "Report | dict") -> dict | None:
    """The notes of the report's `search` stage (its trials and Pareto fronts), or None."""
    for stage in _data(report)["stages"]:
        notes = stage.get("notes", {})
        if {"pareto", "trials", "objective", "target"} <= set(notes):
            return notes
    return None


def figures(report: "Report | dict") -> dict[str, "Figure"]:
    """`{"stages": ..., "layers": ..., "training": ...}` for one report, `"auto"` after an `auto` step
    and `"pareto"` (`kstruct.search.pareto.pareto_figure`) after a `search` step."""
    found = {"stages": stages_figure(report), "layers": layers_figure(report), "training": training_figure(report)}
    if auto_notes(report) is not None:
        found["auto"] = auto_figure(report)
    searched = search_notes(report)
    if searched is not None:
        from kstruct.search.pareto import pareto_figure

        found["pareto"] = pareto_figure(searched)
    return found


def save_figures(report: "Report | dict", directory: str | os.PathLike) -> list[str]:
    """Writes `stages.png`, `layers.png` and `training.png` into `directory`; returns their names."""
    written = []
    for name, figure in figures(report).items():
        save(figure, Path(directory) / f"{name}.png")
        written.append(f"{name}.png")
    return written


def markdown(names: list[str]) -> str:
    """The Markdown that embeds the figures in `report.md`."""
    return "\n".join(["## Figures", ""] + [f"![{Path(n).stem}]({n})" for n in names])


def auto_table(report: "Report | dict") -> str:
    """`auto`'s trials as a Markdown table for `report.md` ("" without an `auto` stage)."""
    notes = auto_notes(report)
    if notes is None:
        return ""
    lines = ["## auto: trials", "", f"Chosen: `{notes['strategy'] or '(no step)'}`", "",
             "| trial | chain | status | metric | drop | latency ms | speedup | gzip B | params | epochs | why not |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in notes["trials"]:
        metric = "-" if row["metric"] is None else f"{row['metric']:.4f}"
        drop = "-" if row["accuracy_drop"] is None else f"{row['accuracy_drop']:+.4f}"
        latency = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.4f}"
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        gzip = "-" if row["gzip_bytes"] is None else f"{row['gzip_bytes']:,}"
        params = "-" if row["params"] is None else f"{row['params']:,}"
        chain = (row["strategy"] or "(no step)").replace("|", "/")
        lines.append(f"| {row['trial_id']} | `{chain}` | {row['status']} | {metric} | {drop} | {latency} | {speedup} "
                     f"| {gzip} | {params} | {row['epochs']} | {row['why'].replace('|', '/')} |")
    return "\n".join(lines)
