"""Does the TFLite file compute what the Keras model computes? Both on the same inputs."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from tflite_export import runtime
from tflite_export.evaluate import top1_accuracy
from tflite_export.errors import ExportError


@dataclasses.dataclass
class Verification:
    """Keras vs LiteRT on the same inputs (first output when there are several).

    Attributes:
        samples: rows compared.
        top1_agreement: fraction of rows where both argmaxes agree.
        max_abs_diff / mean_abs_diff: of the dequantized TFLite outputs vs Keras.
        output_range: max - min of the Keras outputs (the scale the diffs are read on).
        max_abs_diff_relative: `max_abs_diff / output_range`.
        keras_accuracy / tflite_accuracy: top-1 accuracy when `y` was given, else None.
    """

    samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    output_range: float
    max_abs_diff_relative: float
    keras_accuracy: float | None = None
    tflite_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verify(model: bytes | str | os.PathLike, keras_model, x: np.ndarray, y: np.ndarray | None = None) -> Verification:
    """Runs the Keras model and the TFLite file on `x` and compares their outputs.

    Args:
        model: TFLite bytes or a path.
        keras_model: the Keras model the file was converted from.
        x: inputs `(n, ...)`.
        y: optional labels (int or one-hot) to report each side's accuracy.

    Raises:
        ExportError: `x` is empty or misshapen, or the outputs differ in shape.
    """
    x = np.asarray(x)
    if len(x) == 0:
        raise ExportError("Expected at least one input row in `x`. Received: 0 rows")
    lite = runtime.predict(model, x)
    lite = lite[0] if isinstance(lite, list) else lite
    ref = keras_model.predict(x, batch_size=256, verbose=0)
    ref = np.asarray(ref[0] if isinstance(ref, (list, tuple)) else ref, dtype=np.float32)
    if ref.shape != lite.shape:
        raise ExportError(f"Keras output shape {ref.shape} differs from the TFLite output shape {lite.shape}")
    diff = np.abs(ref - lite)
    output_range = float(ref.max() - ref.min())
    return Verification(
        samples=len(x),
        top1_agreement=float(np.mean(ref.argmax(-1) == lite.argmax(-1))),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        output_range=output_range,
        max_abs_diff_relative=float(diff.max() / output_range) if output_range > 0 else float(diff.max()),
        keras_accuracy=None if y is None else top1_accuracy(ref, y),
        tflite_accuracy=None if y is None else top1_accuracy(lite, y),
    )
