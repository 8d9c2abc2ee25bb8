"""Parity of QAT models and their int8 files, per activation and for the layers issue 9 listed.

    .venv/bin/python benchmarks/qat_coverage.py

One row per case: what QAT left in float, the int8 ops the file holds besides
the layer math, and how far the file's outputs are from the QAT model's on 256
random inputs (in steps of the output's int8 grid; top-1 agreement).
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tflite_export  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

from kstruct.quantization import quantization_report, quantize  # noqa: E402
from kstruct.quantization.activations import INT8_NATIVE  # noqa: E402


def _dense(activation):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation=activation)(inputs)
    x = keras.layers.Activation(activation)(keras.layers.Dense(8)(x))
    return keras.Model(inputs, keras.layers.Dense(3)(x)), (8,)


def _text():
    inputs = keras.Input((16,), dtype="int32")
    x = keras.layers.Conv1D(16, 3, activation="relu")(keras.layers.Embedding(50, 8)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalMaxPooling1D()(x))), "tokens"


def _attention():
    inputs = keras.Input((8, 16))
    x = keras.layers.LayerNormalization()(inputs + keras.layers.MultiHeadAttention(2, 8)(inputs, inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x))), (8, 16)


def _row(name, build):
    keras.utils.set_random_seed(0)
    model, shape = build()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (256, 16)).astype("int32") if shape == "tokens" else rng.normal(scale=2.0, size=(256, *shape)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = quantize(model)
    for batch in np.array_split(x, 4):
        qat(batch, training=True)
    blob = tflite_export.convert(qat, "int8", representative_data=x[:64])
    expected, actual = qat.predict(x, verbose=0), np.asarray(tflite_export.predict(blob, x))
    interpreter = Interpreter(model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    step = interpreter.get_output_details()[0]["quantization"][0]
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()} - {"FULLY_CONNECTED", "CONV_2D"})
    steps = np.abs(expected - actual) / step
    floats = ",".join(entry.name for entry in quantization_report(qat).skipped) or "-"
    print(
        f"{name:<14} {floats:<34} {' '.join(ops):<42} {steps.max():5.1f} {np.mean(steps < 0.01):8.1%} "
        f"{np.mean(expected.argmax(-1) == actual.argmax(-1)):8.1%}",
        flush=True,
    )


def main():
    print(f"{'case':<14} {'left in float':<34} {'other ops in the file':<42} {'max':>5} {'equal':>8} {'top-1':>8}")
    for activation in (*INT8_NATIVE, "swish", "hard_swish", "elu", "selu", "softplus"):
        _row(activation, lambda activation=activation: _dense(activation))
    _row("conv1d text", _text)
    _row("attention", _attention)


if __name__ == "__main__":
    main()
