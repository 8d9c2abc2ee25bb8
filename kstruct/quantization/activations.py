"""The one table of activations int8 TFLite runs natively, and how QAT simulates each.

TFLite fuses ReLU and ReLU6 into CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and
ADD, so their int8 output is quantized once, after the activation. The others
run as their own int8 kernel: their input is quantized (the layer before it) and
their output too, over a fixed range where the kernel demands one.

`ACTIVATIONS` is the table both `qat` and the search (`kstruct.search.activations`)
read, so the search never offers an activation `qat` then leaves in float. Each
row was checked by converting a QAT model (tests/quantization/test_qat_activations.py):
GELU, HARD_SWISH, LOGISTIC, TANH and LEAKY_RELU are int8 kernels; `hard_sigmoid`
becomes ADD (ReLU6 fused) + MUL; `silu` LOGISTIC + MUL. The int8 file equals
the QAT model exactly for relu, relu6, sigmoid, softmax, tanh, silu and gelu, and
within 2 output steps for hard_silu, leaky_relu and hard_sigmoid, whose kernels
requantize inside (benchmarks/qat_coverage.py). Left out: `elu` (the
converter wraps ELU in DEQUANTIZE/QUANTIZE), and `selu`, `softplus`, `mish`,
which the converter splits into several int8 ops (EXP, LOG, ...) whose ranges QAT
does not simulate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from keras import ops

from tflite_export.int8_ops import INT8_ACTIVATIONS

from kstruct.quantization.quantizers import TANH_RANGE, UNIT_RANGE, quantize_fixed


@dataclass(frozen=True)
class ActivationSpec:
    """How one activation is quantized.

    Attributes:
        fusable: TFLite fuses it into the preceding op (no tensor between them).
        output_range: a fixed output range the int8 kernel requires, or None for
            a range learned like any other activation.
        function: the simulation to use instead of the Keras activation, when the
            kernel TFLite runs has an int8 tensor inside it (swish: LOGISTIC, then MUL).
        nonnegative: its output is never negative, so its range's minimum is 0.
    """

    fusable: bool = False
    output_range: tuple[float, float] | None = None
    function: Callable | None = None  # (x, training) -> y
    nonnegative: bool = False


def _quantized_silu(x, training=None):
    gate = ops.sigmoid(x)
    return x * (gate if training else quantize_fixed(gate, UNIT_RANGE))


ACTIVATIONS: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(fusable=True),
    "relu": ActivationSpec(fusable=True, nonnegative=True),
    "relu6": ActivationSpec(fusable=True, nonnegative=True),
    "sigmoid": ActivationSpec(output_range=UNIT_RANGE),
    "softmax": ActivationSpec(output_range=UNIT_RANGE),
    "tanh": ActivationSpec(output_range=TANH_RANGE),
    "hard_silu": ActivationSpec(),  # HARD_SWISH
    "silu": ActivationSpec(function=_quantized_silu),  # LOGISTIC + MUL
    "leaky_relu": ActivationSpec(),  # LEAKY_RELU
    "gelu": ActivationSpec(),  # GELU
    "hard_sigmoid": ActivationSpec(nonnegative=True),  # ADD with ReLU6 fused, then MUL
}

INT8_NATIVE: tuple[str, ...] = INT8_ACTIVATIONS  # the runtime's fact; ACTIVATIONS has a row for each


# Not in ACTIVATIONS: QAT quantizes the layer's output before the activation and
# the activation's output after it (a learned range); between them the converter
# runs it in float (DEQUANTIZE, op, QUANTIZE) or as int8 pieces it calibrates.
FLOAT_ACTIVATION = ActivationSpec()


def activation_name(layer: keras.layers.Layer) -> str | None:
    """The canonical name of the activation an activation layer computes, or None.

    None for layers that are not activations and for settings kstruct does not
    quantize (a ReLU with a threshold, a softmax over another axis); the caller
    leaves those in float.
    """
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.threshold) != 0.0:
            return None
        if float(layer.negative_slope) != 0.0:
            return "leaky_relu" if layer.max_value is None else None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, keras.layers.Softmax):
        axis = layer.axis if isinstance(layer.axis, int) else None
        return "softmax" if axis == -1 else None
    if isinstance(layer, keras.layers.Activation):
        return function_name(layer.activation)
    return None


def function_name(activation) -> str | None:
    """The canonical name of an activation function (`Dense(activation=...)`), or None."""
    try:
        name = keras.activations.serialize(activation)
    except (OSError, TypeError, ValueError, AttributeError):  # a lambda (its source unreadable) or an unregistered function
        return None
    if not isinstance(name, str):
        return None
    name = {"swish": "silu", "hard_swish": "hard_silu"}.get(name, name)
    return name


def spec_for(name: str | None) -> ActivationSpec | None:
    """The spec of a supported activation name, or None."""
    return ACTIVATIONS.get(name) if name is not None else None
