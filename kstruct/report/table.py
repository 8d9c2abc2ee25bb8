"""The optimization report: one row per stage, rendered as text, Markdown and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageReport:
    """Measurements of the model after one stage (the original model is stage 0).

    Quality is measured as the model's task is judged (kstruct.engine.task), on the
    validation data, for the Keras model and its TFLite file for the target on
    LiteRT. The headline figures are the first output's; `outputs` holds every
    output's, by name.

    Attributes:
        keras_accuracy / tflite_accuracy: accuracy (top-1 per row or per element, or
            thresholded for a binary output); None for regression.
        agreement: fraction of predictions on which Keras and TFLite agree (argmax,
            or the same side of the threshold); None for regression.
        max_abs_diff: the largest |Keras - TFLite| over all outputs.
        sparsity: zeros over the prunable weights (`prunable_params` of them, in
            `prunable_layers` layers); `not_prunable` names layers with weight matrices
            pruning did not cover. `nonzero_params / params` is the whole model's
            non-zero fraction, which `sparsity_headline` puts beside it: a model whose
            weights sit mostly in a layer pruning skips (an Embedding) stays mostly dense.
        task / metric: the task ("classification", "binary", "regression",
            "multi-output") and the name of the headline metric; `keras_metric` /
            `tflite_metric` are its values (the compiled loss, for regression).
        mean_top1_margin: mean top-1 minus top-2 Keras output (classification): on a
            low-confidence model a small difference flips the argmax, so read the
            agreement next to it.
        backend: the Keras backend that ran the stage's step (its training), so a
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
    task: str = "classification"
    metric: str = "accuracy"
    keras_metric: float | None = None
    tflite_metric: float | None = None
    mean_abs_diff: float | None = None
    mean_top1_margin: float | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    prunable_params: int | None = None
    not_prunable: list[str] = field(default_factory=list)
    backend: str | None = None
    prunable_layers: int | None = None

    @property
    def nonzero_fraction(self) -> float:
        """The whole model's non-zero parameters over all its parameters."""
        return self.nonzero_params / self.params if self.params else 0.0

    def sparsity_headline(self) -> str:
        """The sparsity with what it is over, and the whole model's non-zero fraction beside it.

        E.g. "sparsity 50.0% of the 424 weights in 2 prunable layers (model: 65.9% of 621 parameters non-zero)".
        """
        over = ""
        if self.prunable_params is not None:
            layers = "" if self.prunable_layers is None else f" in {self.prunable_layers} prunable layer" + (
                "" if self.prunable_layers == 1 else "s"
            )
            over = f" of the {self.prunable_params:,} weights{layers}"
        return (
            f"sparsity {self.sparsity:.1%}{over} (model: {self.nonzero_fraction:.1%} of "
            f"{self.params:,} parameters non-zero)"
        )

    def summary_line(self, target: str) -> str:
        """One progress line for this stage."""
        acc = "n/a" if self.keras_metric is None else f"{self.keras_metric:.4f}"
        tfl = "n/a" if self.tflite_metric is None else f"{self.tflite_metric:.4f}"
        return (
            f"kstruct: {self.stage}: {self.metric} {acc} (keras), {tfl} ({target} tflite), "
            f"{self.sparsity_headline()}, {self.tflite_gzip_bytes / 1024:.1f} KiB gzipped, "
            f"{self.latency_ms:.3f} ms/image, {self.seconds:.1f} s"
        )


_COLUMNS = [
    ("stage", "stage", "{}"),
    ("keras {}", "keras_metric", "{:.4f}"),
    ("tflite {}", "tflite_metric", "{:.4f}"),
    ("agree", "agreement", "{:.2%}"),
    ("max diff", "max_abs_diff", "{:.2g}"),
    ("sparsity", "sparsity", "{:.1%}"),
    ("params", "params", "{:,}"),
    ("non-zero", "nonzero_params", "{:,}"),
    ("tflite B", "tflite_bytes", "{:,}"),
    ("gzip B", "tflite_gzip_bytes", "{:,}"),
    ("ms/img", "latency_ms", "{:.3f}"),
    ("time s", "seconds", "{:.1f}"),
    ("backend", "backend", "{}"),
]


_SHORT_METRICS = {
    "accuracy": "acc",
    "thresholded accuracy": "acc@t",
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "mean_absolute_percentage_error": "mape",
    "mean_squared_logarithmic_error": "msle",
}


@dataclass
class Report:
    """What `kstruct.optimize` did and measured, stage by stage."""

    strategy: str
    target: str
    stages: list[StageReport] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)  # per layer, original vs final model

    @property
    def final(self) -> StageReport:
        return self.stages[-1]

    def _header(self) -> list[str]:
        metric = self.stages[0].metric if self.stages else "accuracy"
        short = _SHORT_METRICS.get(metric, metric)
        return [title.format(short) for title, _, _ in _COLUMNS]

    def _metric_line(self) -> str:
        """Which metric the table's keras/tflite columns show, and for which output."""
        if not self.stages:
            return ""
        first = self.stages[0]
        names = list(first.outputs)
        return f"metric: {first.metric} ({first.task}" + (f", output '{names[0]}')" if names else ")")

    def _cells(self) -> list[list[str]]:
        rows = []
        for stage in self.stages:
            values = asdict(stage)
            rows.append(["n/a" if values[key] is None else fmt.format(values[key]) for _, key, fmt in _COLUMNS])
        return rows

    def to_text(self) -> str:
        """A fixed-width table for terminals."""
        header = self._header()
        rows = self._cells()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        out = [f"strategy: {self.strategy}    target: {self.target}    {self._metric_line()}"]
        out += [line(header), line(["-" * w for w in widths])]
        out += [line(r) for r in rows]
        out += self._not_prunable_lines()
        out += self._output_lines()
        return "\n".join(out)

    def _not_prunable_lines(self, *, markdown: bool = False) -> list[str]:
        """What the sparsity column is over, beside the model's non-zero fraction; the layers left out."""
        if not self.stages:
            return []
        final = self.final
        lines = ["", f"final {final.sparsity_headline()}"]
        if final.not_prunable:
            lines += [""] * markdown  # its own paragraph in Markdown
            lines.append(f"not prunable (left dense, outside the sparsity column): {', '.join(final.not_prunable)}")
        return lines

    def _output_lines(self) -> list[str]:
        """One line per output and stage, for models with several outputs."""
        if not self.stages or len(self.stages[0].outputs) < 2:
            return []
        lines = ["", "per output (keras / tflite, agreement, max |diff|):"]
        fmt = lambda v, f: "n/a" if v is None else f.format(v)
        for stage in self.stages:
            for name, o in stage.outputs.items():
                lines.append(
                    f"  {stage.stage}: {name} ({o['task']}, {o['metric']}): {fmt(o['keras'], '{:.4f}')} / "
                    f"{fmt(o['tflite'], '{:.4f}')}, agree {fmt(o['agreement'], '{:.2%}')}, max diff {o['max_abs_diff']:.2g}"
                )
        return lines

    def to_markdown(self) -> str:
        header = self._header()
        out = [f"**strategy** `{self.strategy}`, **target** `{self.target}`, {self._metric_line()}", ""]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self._cells()]
        out += self._not_prunable_lines(markdown=True)
        extra = self._output_lines()
        if extra:
            out += ["", "```", *extra[1:], "```"]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "target": self.target,
            "settings": self.settings,
            "stages": [asdict(stage) for stage in self.stages],
            "layers": self.layers,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def __str__(self) -> str:
        return self.to_text()
