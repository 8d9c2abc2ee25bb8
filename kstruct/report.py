"""The optimization report: one row per stage, rendered as text, Markdown and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageReport:
    """Measurements of the model after one stage (the original model is stage 0).

    Accuracies are top-1 on the validation data: `keras_accuracy` of the Keras
    model, `tflite_accuracy` of its TFLite file for the target on LiteRT, and
    `agreement` the fraction of images on which both predict the same class.
    `backend` is the Keras backend that ran the stage's step (its training), so a
    report says whether a model was trained on JAX; None for the original model.
    """

    stage: str
    keras_accuracy: float | None
    tflite_accuracy: float | None
    agreement: float | None
    max_abs_diff: float | None
    sparsity: float
    params: int
    nonzero_params: int
    tflite_bytes: int
    tflite_gzip_bytes: int
    latency_ms: float
    latency_p90_ms: float
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None

    def summary_line(self, target: str) -> str:
        """One progress line for this stage."""
        acc = "n/a" if self.keras_accuracy is None else f"{self.keras_accuracy:.4f}"
        tfl = "n/a" if self.tflite_accuracy is None else f"{self.tflite_accuracy:.4f}"
        return (
            f"kstruct: {self.stage}: accuracy {acc} (keras), {tfl} ({target} tflite), "
            f"sparsity {self.sparsity:.1%}, {self.tflite_gzip_bytes / 1024:.1f} KiB gzipped, "
            f"{self.latency_ms:.3f} ms/image, {self.seconds:.1f} s"
        )


_COLUMNS = [
    ("stage", "stage", "{}"),
    ("keras acc", "keras_accuracy", "{:.4f}"),
    ("tflite acc", "tflite_accuracy", "{:.4f}"),
    ("agree", "agreement", "{:.2%}"),
    ("sparsity", "sparsity", "{:.1%}"),
    ("params", "params", "{:,}"),
    ("non-zero", "nonzero_params", "{:,}"),
    ("tflite B", "tflite_bytes", "{:,}"),
    ("gzip B", "tflite_gzip_bytes", "{:,}"),
    ("ms/img", "latency_ms", "{:.3f}"),
    ("time s", "seconds", "{:.1f}"),
    ("backend", "backend", "{}"),
]


@dataclass
class Report:
    """What `kstruct.optimize` did and measured, stage by stage."""

    strategy: str
    target: str
    stages: list[StageReport] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> StageReport:
        return self.stages[-1]

    def _cells(self) -> list[list[str]]:
        rows = []
        for stage in self.stages:
            values = asdict(stage)
            rows.append(["n/a" if values[key] is None else fmt.format(values[key]) for _, key, fmt in _COLUMNS])
        return rows

    def to_text(self) -> str:
        """A fixed-width table for terminals."""
        header = [title for title, _, _ in _COLUMNS]
        rows = self._cells()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        out = [f"strategy: {self.strategy}    target: {self.target}", line(header), line(["-" * w for w in widths])]
        out += [line(r) for r in rows]
        return "\n".join(out)

    def to_markdown(self) -> str:
        header = [title for title, _, _ in _COLUMNS]
        out = [f"**strategy** `{self.strategy}`, **target** `{self.target}`", "", "| " + " | ".join(header) + " |"]
        out.append("|" + "|".join("---" for _ in header) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self._cells()]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "target": self.target,
            "settings": self.settings,
            "stages": [asdict(stage) for stage in self.stages],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def __str__(self) -> str:
        return self.to_text()
