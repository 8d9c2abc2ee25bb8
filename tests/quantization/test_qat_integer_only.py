"""With int8 I/O, every tensor inside the converted graph is int8 (int32 biases), with no float islands."""

import keras
import numpy as np
import pytest

import tflite_export
from kstruct.quantization import quantize
from qat_helpers import calibrate, float_fallback_ops, non_integer_tensors, op_names


def _int8_file(model, x):
    qat = quantize(model)
    calibrate(qat, x)
    return tflite_export.convert(qat, "int8", representative_data=x)


def _assert_integer_only(blob):
    assert non_integer_tensors(blob) == []
    assert float_fallback_ops(blob) == []


def test_example_cnn_int8_file_is_integer_only(qat_cnn_int8):
    _assert_integer_only(qat_cnn_int8)
    assert op_names(qat_cnn_int8).count("CONV_2D") == 2


def _residual_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    for _ in range(2):
        y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(8, 3, padding="same")(y)
        y = keras.layers.BatchNormalization()(y)
        x = keras.layers.Add()([x, y])
        x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def test_resnet_style_model_with_residual_adds_is_integer_only():
    x = np.random.default_rng(0).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    blob = _int8_file(_residual_model(), x)
    _assert_integer_only(blob)
    ops = op_names(blob)
    assert ops.count("ADD") == 2
    # Five convolutions, each with its BatchNormalization folded in (no MUL/ADD for BN).
    assert ops.count("CONV_2D") == 5
    assert "MUL" not in ops


@pytest.mark.parametrize(
    "activation, kernel",
    [
        ("relu6", None),
        ("hard_silu", "HARD_SWISH"),
        ("silu", "LOGISTIC"),
        ("sigmoid", "LOGISTIC"),
        ("tanh", "TANH"),
        ("leaky_relu", "LEAKY_RELU"),
        ("softmax", "SOFTMAX"),
    ],
)
def test_applications_activations_convert_to_int8_kernels(activation, kernel):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.Activation(activation)(x)
    outputs = keras.layers.Conv2D(4, 1)(x)
    x_data = np.random.default_rng(1).normal(size=(8, 8, 8, 3)).astype("float32")
    blob = _int8_file(keras.Model(inputs, outputs), x_data)
    _assert_integer_only(blob)
    if kernel is not None:
        assert kernel in op_names(blob)


def test_concatenate_multiply_and_padding_stay_integer():
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.SeparableConv2D(4, 3, padding="same", activation="relu")(inputs)
    b = keras.layers.DepthwiseConv2D(3, padding="same")(inputs)
    x = keras.layers.Concatenate()([a, b])
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid")(gate)
    x = keras.layers.Multiply()([x, gate])
    x = keras.layers.ZeroPadding2D()(x)
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    outputs = keras.layers.Flatten()(x)
    x_data = np.random.default_rng(2).normal(size=(8, 8, 8, 4)).astype("float32")
    blob = _int8_file(keras.Model(inputs, outputs), x_data)
    _assert_integer_only(blob)
    ops = op_names(blob)
    assert {"CONCATENATION", "MUL", "PAD", "TRANSPOSE_CONV"} <= set(ops)


@pytest.mark.slow
def test_mobilenet_v2_int8_file_is_integer_only():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10)
    x = np.random.default_rng(3).uniform(-1, 1, (8, 96, 96, 3)).astype("float32")
    blob = _int8_file(model, x)
    _assert_integer_only(blob)
    # Every BatchNormalization is folded: MobileNetV2 has 52 of them and no MUL in int8.
    assert "MUL" not in op_names(blob)


def test_a_dead_relu_layer_gets_a_nonzero_range_and_its_int8_file_runs():
    """A layer whose ReLU outputs are all 0 (fine-tuning can kill one) used to get the range [0, 0]:
    a zero scale, and a file LiteRT's XNNPACK delegate refused ("failed to prepare")."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="dead"),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(), keras.layers.Dense(3),
    ])
    kernel, bias = model.get_layer("dead").get_weights()
    model.get_layer("dead").set_weights([kernel, np.full_like(bias, -100.0)])
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 3)).astype("float32")
    qat = quantize(model)
    calibrate(qat, x)
    ranges = [layer for layer in qat._flatten_layers() if hasattr(layer, "max_value") and hasattr(layer, "min_value")]
    assert ranges and all(float(r.max_value.numpy()) - float(r.min_value.numpy()) >= 1e-3 for r in ranges)
    blob = tflite_export.convert(qat, "int8", representative_data=x)
    _assert_integer_only(blob)
    np.testing.assert_allclose(np.asarray(tflite_export.predict(blob, x), dtype="float32"), qat(x), atol=0.05)
