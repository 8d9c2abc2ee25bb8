"""A hidden ReLU layer whose every unit is dead (all outputs 0 on the calibration data) converts
to integer files that LiteRT runs and that compute what the model does (see `tflite_export._dead_ranges`)."""

import importlib

import numpy as np
import pytest

import kstruct
import tflite_export
from tflite_export import runtime
from tflite_export._dead_ranges import has_dead_activations

FEATURES, UNITS, CLASSES = 8, 16, 3
HEAD_BIAS = [0.5, -0.2, 0.1]  # what the model outputs (through softmax) once the hidden layer is dead


def _kill(layer) -> None:
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, np.full_like(bias, -100.0)])  # no input reaches 0: every unit outputs 0


def _set_bias(layer, bias) -> None:
    kernel, _ = layer.get_weights()
    layer.set_weights([kernel, np.asarray(bias, "float32")])


def dead_sequential():
    """Input(8) -> Dense(16, relu), every unit dead -> Dense(3, softmax): a constant output, softmax(HEAD_BIAS)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(UNITS, activation="relu"),
        keras.layers.Dense(CLASSES, activation="softmax"),
    ])
    _kill(model.layers[0])
    _set_bias(model.layers[1], HEAD_BIAS)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def dead_branch():
    """The dead layer's head added to a live Dense of the input: outputs that vary with the input."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(UNITS, activation="relu", name="dead")(inputs)
    head = keras.layers.Dense(CLASSES, name="head")(hidden)
    live = keras.layers.Dense(CLASSES, name="live")(inputs)
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Add()([head, live])))
    _kill(model.get_layer("dead"))
    _set_bias(model.get_layer("head"), HEAD_BIAS)
    return model


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(64, FEATURES)).astype("float32")


def _output_step(blob: bytes) -> float:
    scale, _ = runtime.load_interpreter(blob).get_output_details()[0]["quantization"]
    return float(scale)


@pytest.mark.parametrize("make", [dead_sequential, dead_branch])
def test_an_int8_file_with_a_dead_relu_layer_runs_on_xnnpack_and_matches_the_model(make, x):
    model = make()
    blob = tflite_export.convert(model, "int8", representative_data=x)
    assert not has_dead_activations(blob)  # the dead tensor's scale was 7.8e-9: XNNPACK refused the file
    lite = tflite_export.predict(blob, x)  # LiteRT's default XNNPACK delegate loads and runs it
    reference = model.predict(x, verbose=0)
    if make is dead_sequential:  # the next layer sees exact zeros: within one output step of the model
        assert np.abs(lite - reference).max() <= _output_step(blob)
    else:
        assert np.abs(lite - reference).max() < 0.03
        assert np.array_equal(lite.argmax(-1), reference.argmax(-1))


def test_an_int16x8_file_with_a_dead_relu_layer_computes_the_model(x):
    model = dead_sequential()
    blob = tflite_export.convert(model, "int16x8", representative_data=x)
    # The legacy quantizer gave the dead tensor a denormal scale and the next kernel infinite scales:
    # every output was 1/3.
    assert np.abs(tflite_export.predict(blob, x) - model.predict(x, verbose=0)).max() < 1e-3


def test_an_int4_file_with_a_dead_relu_layer_runs_and_matches_the_model(x):
    model = dead_sequential()
    blob = tflite_export.convert(model, "int4", representative_data=x)
    assert np.abs(tflite_export.predict(blob, x) - model.predict(x, verbose=0)).max() <= _output_step(blob)


def test_a_file_without_a_dead_tensor_is_converted_once(tiny_dense, x, monkeypatch):
    convert_module = importlib.import_module("tflite_export.convert")

    def refuse(*args):
        raise AssertionError("quantized again")

    monkeypatch.setattr(convert_module, "_requantize_dead", refuse)
    blob = tflite_export.convert(tiny_dense, "int8", representative_data=x)
    assert not has_dead_activations(blob)


@pytest.mark.parametrize("strategy", ["ptq", "qat"])
def test_optimize_for_int8_measures_a_model_with_a_dead_relu_layer(strategy, x):
    """`measure_stage` crashed on the original model's int8 file, so both strategies failed."""
    y = np.zeros(len(x), "int64")
    result = kstruct.optimize(
        dead_sequential(), strategy, train_data=(x, y), validation_data=(x, y), target="int8", epochs=1, verbose=0
    )
    assert [stage.agreement for stage in result.report.stages] == [1.0, 1.0]
    assert tflite_export.predict(result.tflite, x).argmax(-1).tolist() == [0] * len(x)
