"""Each activation in the int8 table converts to int8 ops only and matches its QAT model; others run in float."""

import warnings

import keras
import numpy as np
import pytest
import tflite_export

from kstruct.quantization import quantization_report, quantize
from kstruct.quantization.activations import INT8_NATIVE
from kstruct.search import NATIVE_ACTIVATIONS
from qat_helpers import assert_within_one_step, calibrate, float_fallback_ops, non_integer_tensors

# Keras's other spellings of activations in the table.
ALIASES = ("swish", "hard_swish")
# TFLite requantizes inside these kernels (HARD_SWISH's and LEAKY_RELU's fixed-point
# multipliers; hard_sigmoid's ADD output, whose range the converter calibrates): up to
# 2 steps apart, most equal (benchmarks/qat_coverage.py: 98%, 90% and 75% of outputs).
_TWO_STEPS = dict(steps=2, exact=0.6)
REQUANTIZED = {name: _TWO_STEPS for name in ("hard_silu", "hard_swish", "leaky_relu", "hard_sigmoid")}


def _dense_model(activation):
    # The activation both fused into a Dense and as an Activation layer of its own.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation=activation, name="hidden")(inputs)
    x = keras.layers.Activation(activation, name="act")(keras.layers.Dense(8)(x))
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _conv_model(activation):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation=activation)(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))


def _x(shape):
    return np.random.default_rng(0).normal(scale=2.0, size=(32, *shape)).astype("float32")


@pytest.mark.parametrize("build", [_dense_model, _conv_model], ids=["dense", "conv"])
@pytest.mark.parametrize("activation", [*INT8_NATIVE, *ALIASES])
def test_each_int8_activation_converts_to_integer_ops_and_matches_the_qat_model(activation, build):
    model = build(activation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left in float
        qat = quantize(model)
    assert quantization_report(qat).skipped == []
    x = _x(model.input_shape[1:])
    blob = tflite_export.convert(calibrate(qat, x), "int8", representative_data=x)

    assert non_integer_tensors(blob) == [] and float_fallback_ops(blob) == []
    assert_within_one_step(blob, qat, x, **REQUANTIZED.get(activation, {}))


@pytest.mark.parametrize("activation", ["elu", "selu", "softplus"])
def test_other_activations_run_in_float_with_a_warning_naming_them(activation):
    model = _dense_model(activation)
    with pytest.warns(UserWarning, match=rf"hidden_activation \(Activation: activation '{activation}' is not int8-native: QAT keeps it in float"):
        qat = quantize(model)
    skipped = {entry.name for entry in quantization_report(qat).skipped}
    assert skipped == {"hidden_activation", "act"}  # the fused one and the Activation layer

    x = _x((8,))
    blob = tflite_export.convert(calibrate(qat, x), "int8", representative_data=x)
    agreement = np.mean(tflite_export.predict(blob, x).argmax(-1) == qat.predict(x, verbose=0).argmax(-1))
    # The converter splits selu and softplus into int8 EXP/LOG/... ops with ranges it
    # calibrates, which QAT does not simulate: agreement is measured, not exact (0.81 for selu).
    assert agreement >= 0.75


def test_elu_runs_exactly_in_float_between_int8_tensors():
    qat = quantize(_dense_model("elu"))
    x = _x((8,))
    blob = tflite_export.convert(calibrate(qat, x), "int8", representative_data=x)
    assert "DEQUANTIZE" in float_fallback_ops(blob)
    assert_within_one_step(blob, qat, x)


def test_search_offers_integer_targets_only_activations_qat_quantizes():
    for target in ("int8", "int16x8", "edgetpu", "micro"):
        assert set(NATIVE_ACTIVATIONS[target]) <= set(INT8_NATIVE), target
    assert {"gelu", "hard_sigmoid"} <= set(NATIVE_ACTIVATIONS["int8"])
    assert "elu" not in INT8_NATIVE


def test_qat_simulates_exactly_the_activations_litert_runs_in_int8():
    from tflite_export.int8_ops import INT8_ACTIVATIONS

    from kstruct.quantization.activations import ACTIVATIONS

    assert set(ACTIVATIONS) == {"linear", *INT8_ACTIVATIONS}
