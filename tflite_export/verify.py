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
class OutputDiff:
    """Keras vs LiteRT on one output: how far apart, on what scale."""

    max_abs_diff: float
    mean_abs_diff: float
    output_range: float
    top1_agreement: float

    @classmethod
    def between(cls, ref: np.ndarray, lite: np.ndarray) -> "OutputDiff":
        diff = np.abs(ref - lite)
        return cls(
            max_abs_diff=float(diff.max()) if diff.size else 0.0,
            mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
            output_range=float(ref.max() - ref.min()) if ref.size else 0.0,
            top1_agreement=float(np.mean(ref.argmax(-1) == lite.argmax(-1))) if ref.size else 1.0,
        )


@dataclasses.dataclass
class Verification:
    """Keras vs LiteRT on the same inputs; the top-level figures are the first output's.

    Attributes:
        samples: rows compared.
        top1_agreement: fraction of rows (or elements, for per-pixel outputs) where both argmaxes agree.
        max_abs_diff / mean_abs_diff: of the dequantized TFLite outputs vs Keras.
        output_range: max - min of the Keras outputs (the scale the diffs are read on).
        max_abs_diff_relative: `max_abs_diff / output_range`.
        keras_accuracy / tflite_accuracy: top-1 accuracy when `y` was given, else None.
        outputs: the same diffs for every output, by output name.
    """

    samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    output_range: float
    max_abs_diff_relative: float
    keras_accuracy: float | None = None
    tflite_accuracy: float | None = None
    outputs: dict[str, OutputDiff] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _rows(x: Any) -> int:
    import keras

    leaves = keras.tree.flatten(x)
    return len(leaves[0]) if leaves else 0


DIRECT_CALL_ROWS = 1024  # up to this many rows, `keras_outputs` calls the model instead of `predict`


def keras_outputs(keras_model, x: Any, batch_size: int = 256) -> Any:
    """The Keras model's outputs on `x` as numpy arrays, in the structure `predict` returns.

    Why not always `predict`: it traces a graph for every new model (and again for a last
    partial batch), which on the few hundred rows a file is checked on costs several times
    the forward pass (on 400 rows, 0.15 s against 0.04 s of CPU for the example CNN, 1.4 s
    against 0.38 s for MobileNetV2: benchmarks/keras_overheads.py), the same outputs to the
    bit. Keras advises calling the model itself
    on inputs that small; so up to `DIRECT_CALL_ROWS` rows the model is called in batches
    (`training=False`, as `predict` does), and larger inputs go through `predict`. Not on JAX:
    there a direct call runs op by op and XLA compiles each op for each new shape (a QAT
    model's fake-quantizers alone, dozens of compiles), where `predict` compiles one function.
    """
    import keras

    rows = _rows(x)
    if rows > DIRECT_CALL_ROWS or keras.backend.backend() == "jax":
        return keras_model.predict(x, batch_size=batch_size, verbose=0)
    parts = []
    for start in range(0, rows, batch_size):
        batch = keras.tree.map_structure(lambda array: array[start:start + batch_size], x)
        parts.append(keras.tree.map_structure(keras.ops.convert_to_numpy, keras_model(batch, training=False)))
    return keras.tree.map_structure(lambda *arrays: np.concatenate(arrays), *parts)


def paired_outputs(model: bytes | str | os.PathLike, keras_model, x: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{output name: (keras output, tflite output)}` on the same inputs, in the model's output order.

    `x` has the structure of `keras_model.input` (an array, a list, or a dict). TFLite
    inputs are matched to Keras inputs by name (convert names each input tensor after
    its `keras.Input`); outputs are matched by the `keras.tree.flatten` order that
    `convert` traces them in, and checked by shape.

    Raises:
        ExportError: `x` is empty, or an output's shape differs between the two.
    """
    import keras

    if _rows(x) == 0:
        raise ExportError("Expected at least one input row in `x`. Received: 0 rows")
    inputs = keras.tree.flatten(runtime.keras_input_structure(keras_model))
    names = [t.name for t in inputs]
    by_name = isinstance(x, dict) and set(x) == set(names)  # a dict keyed by input name
    leaves = [np.asarray(v) for v in ([x[n] for n in names] if by_name else keras.tree.flatten(x))]
    if len(leaves) != len(inputs):
        raise ExportError(f"Expected {len(inputs)} input arrays for model `{keras_model.name}`. Received: {len(leaves)}")
    feed = leaves[0] if len(leaves) == 1 else {t.name: v for t, v in zip(inputs, leaves)}
    lite = runtime.predict(model, feed)
    lite = lite if isinstance(lite, list) else [lite]
    ref = keras_outputs(keras_model, x)
    if isinstance(ref, dict):
        names = [str(path[-1]) for path, _ in keras.tree.flatten_with_path(ref)]
    else:
        names = list(getattr(keras_model, "output_names", None) or [keras_model.layers[-1].name])
    refs = [np.asarray(r, dtype=np.float32) for r in keras.tree.flatten(ref)]
    if len(refs) != len(lite):
        raise ExportError(f"The Keras model has {len(refs)} outputs; the TFLite file has {len(lite)}")
    pairs = {}
    for name, r, l in zip(names, refs, lite):
        if r.shape != l.shape:
            raise ExportError(f"Keras output {name!r} has shape {r.shape}; the TFLite output has shape {l.shape}")
        pairs[name] = (r, l)
    return pairs


def verify(model: bytes | str | os.PathLike, keras_model, x: Any, y: np.ndarray | None = None) -> Verification:
    """Runs the Keras model and the TFLite file on `x` and compares their outputs.

    Args:
        model: TFLite bytes or a path.
        keras_model: the Keras model the file was converted from.
        x: inputs `(n, ...)`; a list or dict of arrays for a multi-input model.
        y: optional labels (int or one-hot) of the first output, to report each side's accuracy.

    Raises:
        ExportError: `x` is empty or misshapen, or the outputs differ in shape.
    """
    pairs = paired_outputs(model, keras_model, x)
    diffs = {name: OutputDiff.between(ref, lite) for name, (ref, lite) in pairs.items()}
    first = next(iter(diffs.values()))
    ref, lite = next(iter(pairs.values()))
    return Verification(
        samples=len(ref),
        top1_agreement=first.top1_agreement,
        max_abs_diff=first.max_abs_diff,
        mean_abs_diff=first.mean_abs_diff,
        output_range=first.output_range,
        max_abs_diff_relative=first.max_abs_diff / first.output_range if first.output_range > 0 else first.max_abs_diff,
        keras_accuracy=None if y is None else top1_accuracy(ref, y),
        tflite_accuracy=None if y is None else top1_accuracy(lite, y),
        outputs=diffs,
    )
