"""Measuring one stage: the Keras model, and its TFLite file on the LiteRT runtime."""

from __future__ import annotations

import gzip

import keras
import numpy as np
import tflite_export

from kstruct.pruning import sparsity
from kstruct.report import StageReport


def count_parameters(model: keras.Model) -> tuple[int, int]:
    """(all parameters, non-zero parameters) of the model's weights.

    Bookkeeping weights that a wrapper adds (masks, steps, quantizer ranges) are not
    parameters of the deployed network, so only the trainable weights and the
    moving statistics of normalization layers are counted.
    """
    weights = [w for w in model.weights if w.trainable or "moving_" in w.path]
    values = [keras.ops.convert_to_numpy(w) for w in weights]
    return int(sum(v.size for v in values)), int(sum(np.count_nonzero(v) for v in values))


def measure_stage(
    stage: str,
    model: keras.Model,
    blob: bytes,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    seconds: float = 0.0,
    notes: dict | None = None,
    latency_runs: int = 50,
) -> StageReport:
    """Verifies `blob` against `model` on the validation data and benchmarks it."""
    verification = tflite_export.verify(blob, model, x_val, y_val)
    timing = tflite_export.benchmark(blob, threads=1, runs=latency_runs)
    params, nonzero = count_parameters(model)
    return StageReport(
        stage=stage,
        keras_accuracy=verification.keras_accuracy,
        tflite_accuracy=verification.tflite_accuracy,
        agreement=verification.agreement,
        max_abs_diff=verification.max_abs_diff,
        sparsity=sparsity(model).overall,
        params=params,
        nonzero_params=nonzero,
        tflite_bytes=len(blob),
        tflite_gzip_bytes=len(gzip.compress(blob, compresslevel=9)),
        latency_ms=timing.median_ms,
        latency_p90_ms=timing.p90_ms,
        seconds=seconds,
        notes=dict(notes or {}),
    )
