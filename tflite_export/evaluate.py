"""Top-1 accuracy of a TFLite file on LiteRT."""

from __future__ import annotations

import os

import numpy as np

from tflite_export import runtime
from tflite_export.errors import ExportError


def top1_accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose argmax matches `y` (int labels, or one-hot rows)."""
    y = np.asarray(y)
    labels = y.argmax(axis=-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1)
    if len(labels) != len(outputs):
        raise ExportError(f"Expected `y` with one label per input row ({len(outputs)}). Received: {len(labels)} labels")
    return float(np.mean(np.asarray(outputs).argmax(axis=-1) == labels))


def evaluate(model: bytes | str | os.PathLike, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the TFLite file on `(x, y)`, run on `ai_edge_litert`.

    Args:
        model: TFLite bytes or a path.
        x: inputs `(n, ...)`, float (quantized with the file's parameters).
        y: int labels `(n,)` or one-hot `(n, classes)`.
    """
    outputs = runtime.predict(model, x)
    if isinstance(outputs, list):
        outputs = outputs[0]
    return top1_accuracy(outputs, y)
