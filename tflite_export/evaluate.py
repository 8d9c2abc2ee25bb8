"""Top-1 accuracy of a TFLite file on LiteRT."""

from __future__ import annotations

import os

import numpy as np

from tflite_export import runtime
from tflite_export.errors import ExportError


def top1_accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of predictions whose argmax over the last axis matches `y`.

    `y` holds int labels of shape `outputs.shape[:-1]` (one per row, or one per pixel
    or time step for segmentation and sequence labelling), or one-hot rows of
    `outputs`'s shape.
    """
    outputs, y = np.asarray(outputs), np.asarray(y)
    if y.shape == outputs.shape and outputs.shape[-1] > 1:
        labels = y.argmax(axis=-1)
    else:
        if y.ndim == 0 or len(y) != len(outputs):
            raise ExportError(
                f"Expected `y` with one label per input row ({len(outputs)}). Received: {y.size if y.ndim == 0 else len(y)} labels"
            )
        if y.size != int(np.prod(outputs.shape[:-1])):
            raise ExportError(
                f"Expected `y` of shape {outputs.shape[:-1]} (int labels) or {outputs.shape} (one-hot) for outputs "
                f"of shape {outputs.shape}. Received: y of shape {y.shape}"
            )
        labels = y.reshape(outputs.shape[:-1])
    return float(np.mean(outputs.argmax(axis=-1) == labels))


def evaluate(model: bytes | str | os.PathLike, x, y: np.ndarray) -> float:
    """Top-1 accuracy of the TFLite file on `(x, y)`, run on `ai_edge_litert`.

    Args:
        model: TFLite bytes or a path.
        x: inputs `(n, ...)`, float (quantized with the file's parameters); a list or
            name-keyed dict of arrays for a multi-input file.
        y: int labels `(n,)` or one-hot `(n, classes)`; per-element labels `(n, h, w)`
            for per-pixel outputs. Only the file's first output is scored.
    """
    outputs = runtime.predict(model, x)
    if isinstance(outputs, list):
        outputs = outputs[0]
    return top1_accuracy(outputs, y)
