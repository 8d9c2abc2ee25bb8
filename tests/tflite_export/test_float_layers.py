"""`convert(model, "int8", ..., float_layers=[...])`: the named layers' ops stay in float inside the int8 file."""

import numpy as np
import pytest

import tflite_export
from tflite_export.errors import ExportError


def with_an_outlier_fed_by_a_dead_unit(model):
    """`model` with unit 0 of `hidden` dead and row 0 of `fragile`'s kernel an outlier (200x its largest weight):
    the float model never sees the outlier, but int8's per-tensor scale rounds the rest of `fragile` to zero."""
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[:, 0], bias[0] = 0.0, -1.0  # unit 0 never fires
    model.get_layer("hidden").set_weights([kernel, bias])
    kernel, bias = model.get_layer("fragile").get_weights()
    kernel[0, :] = 200.0 * np.abs(kernel).max()
    model.get_layer("fragile").set_weights([kernel, bias])
    return model


def _model_with_an_outlier_weight():
    """A CNN whose `fragile` Dense has an outlier kernel row fed by a dead unit: the float model
    ignores it, but its int8 scales round every other weight of the layer to zero."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(12, activation="relu", name="hidden")(x)
    x = keras.layers.Dense(10, activation="relu", name="fragile")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    return with_an_outlier_fed_by_a_dead_unit(model)


@pytest.fixture(scope="module")
def model_and_inputs():
    x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    return _model_with_an_outlier_weight(), x


def _error(blob, model, x) -> float:
    return float(np.mean(np.abs(np.asarray(tflite_export.predict(blob, x)) - model.predict(x, verbose=0))))


def test_a_float_layer_keeps_its_op_and_weights_in_float_and_the_file_is_closer(model_and_inputs):
    model, x = model_and_inputs
    all_int8 = tflite_export.convert(model, "int8", x)
    blob = tflite_export.convert(model, "int8", x, float_layers=["fragile"])

    analysis = tflite_export.analyze(blob)
    assert [op for op, _ in analysis.float_ops] == ["FULLY_CONNECTED"]
    assert "fragile" in analysis.float_ops[0][1]
    assert analysis.weight_dtypes == {"float32": 1, "int8": 3}
    assert {"DEQUANTIZE", "QUANTIZE"} <= set(analysis.ops)
    assert analysis.inputs[0].dtype == analysis.outputs[0].dtype == "int8"
    assert tflite_export.analyze(all_int8).float_ops == []
    assert _error(blob, model, x) < 0.2 * _error(all_int8, model, x)


def test_the_output_layer_stays_in_float_too(model_and_inputs):
    model, x = model_and_inputs
    blob = tflite_export.convert(model, "int8", x, float_layers="head", io_dtype="uint8")
    analysis = tflite_export.analyze(blob)
    assert [op for op, _ in analysis.float_ops] == ["FULLY_CONNECTED"]  # its output tensor is the model's `Identity`
    assert analysis.weight_dtypes == {"float32": 1, "int8": 3}
    assert analysis.outputs[0].dtype == "uint8"


@pytest.mark.parametrize(
    "target, float_layers, message",
    [
        ("int8", ["nope"], "Received: ['nope'] (no such layer); layers with weights: ['conv', 'fragile', 'head', 'hidden']"),
        ("int8", ["flatten"], "Received: 'flatten', whose call reads no weight"),
        ("int8", [3], "Expected `float_layers` to be layer names"),
        ("micro", ["fragile"], "needs target='int8'"),
        ("float32", ["fragile"], "needs target='int8'"),
    ],
)
def test_bad_float_layers_are_refused_in_one_line(model_and_inputs, target, float_layers, message):
    model, x = model_and_inputs
    with pytest.raises(ExportError) as caught:
        tflite_export.convert(model, target, x, float_layers=float_layers)
    assert message in str(caught.value) and "\n" not in str(caught.value)
