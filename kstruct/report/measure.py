"""Measuring one stage: the Keras model, and its TFLite file on the LiteRT runtime, scored by task."""

from __future__ import annotations

import gzip
from typing import Any

import keras
import tflite_export

from kstruct.engine.params import count_nonzero_params, count_params
from kstruct.pruning import sparsity
from kstruct.report.table import StageReport
from kstruct.engine.task import OutputTask, labels_by_output, score


def count_parameters(model: keras.Model) -> tuple[int, int]:
    """(all parameters, non-zero parameters), with `Model.count_params` semantics (see kstruct.engine.params)."""
    return count_params(model), count_nonzero_params(model)


def _leaf_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            while isinstance(layer, keras.layers.Wrapper) and type(layer).__module__.startswith("kstruct."):
                layer = layer.layer
            yield layer


def not_prunable(model: keras.Model, measured: set[str]) -> list[str]:
    """Layers holding a matrix-shaped weight that pruning does not cover (composite or unknown layers)."""
    return [
        layer.name
        for layer in _leaf_layers(model)
        if layer.name not in measured and any(len(w.shape) >= 2 for w in layer.weights)
    ]


def measure_stage(
    stage: str,
    model: keras.Model,
    blob: bytes,
    x_val: Any,
    y_val: Any,
    *,
    tasks: dict[str, OutputTask],
    seconds: float = 0.0,
    notes: dict | None = None,
    latency_runs: int = 50,
) -> StageReport:
    """Compares `blob` with `model` on the validation data, output by output, and benchmarks it.

    Each output is scored as its task is judged (see kstruct.engine.task); the stage's
    headline figures are the first output's.
    """
    pairs = list(tflite_export.paired_outputs(blob, model, x_val).values())
    if len(pairs) != len(tasks):
        raise tflite_export.ExportError(f"Expected {len(tasks)} outputs, as the original model has. Received: {len(pairs)}")
    # By position: a technique may rename output layers (qat's `quant_` prefix); the order stays.
    labels = labels_by_output(y_val, list(tasks))
    outputs = {name: score(spec, ref, lite, labels.get(name)) for (name, spec), (ref, lite) in zip(tasks.items(), pairs)}
    head = next(iter(outputs.values()))
    accuracy_like = head["task"] != "regression"
    timing = tflite_export.benchmark(blob, threads=1, runs=latency_runs)
    params, nonzero = count_parameters(model)
    measured = sparsity(model)
    return StageReport(
        stage=stage,
        keras_accuracy=head["keras"] if accuracy_like else None,
        tflite_accuracy=head["tflite"] if accuracy_like else None,
        agreement=head["agreement"],
        max_abs_diff=max(o["max_abs_diff"] for o in outputs.values()),
        sparsity=measured.overall,
        params=params,
        nonzero_params=nonzero,
        tflite_bytes=len(blob),
        tflite_gzip_bytes=len(gzip.compress(blob, compresslevel=9)),
        latency_ms=timing.median_ms,
        latency_p90_ms=timing.p90_ms,
        seconds=seconds,
        notes=dict(notes or {}),
        task=head["task"] if len(outputs) == 1 else "multi-output",
        metric=head["metric"],
        keras_metric=head["keras"],
        tflite_metric=head["tflite"],
        mean_abs_diff=head["mean_abs_diff"],
        mean_top1_margin=head.get("mean_top1_margin"),
        outputs=outputs,
        prunable_params=measured.size,
        prunable_layers=len(measured.layers),
        not_prunable=not_prunable(model, {layer.name for layer in measured.layers}),
    )
