"""`quantize` at the model level: copies, compile, unsupported layers, nesting, the report."""

import keras
import numpy as np
import pytest

from kstruct.errors import UnsupportedModelError
from kstruct.models import compile_for_classification, example_cnn
from kstruct.quantization import (
    FakeQuant,
    FloatPassthrough,
    QuantizeWrapper,
    quantization_report,
    quantize,
)
from qat_helpers import calibrate


def test_input_model_is_not_modified(float_cnn):
    weights = [w.copy() for w in float_cnn.get_weights()]
    layers = list(float_cnn.layers)
    quantize(float_cnn)
    assert list(float_cnn.layers) == layers
    for before, after in zip(weights, float_cnn.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_quantized_model_is_compiled_like_the_input(float_cnn):
    qat = quantize(float_cnn)
    assert qat.compiled
    assert qat.loss == float_cnn.loss
    assert type(qat.optimizer) is type(float_cnn.optimizer)
    assert not quantize(example_cnn()).compiled


def test_calibrated_qat_model_predicts_like_the_float_model(float_cnn, digits):
    _, _, x_test, _ = digits
    qat = calibrate(quantize(float_cnn), x_test[:256])
    agreement = np.mean(qat.predict(x_test, verbose=0).argmax(-1) == float_cnn.predict(x_test, verbose=0).argmax(-1))
    assert agreement >= 0.97


def test_unsupported_layer_passes_through_in_float_with_a_warning_naming_it():
    inputs = keras.Input((12,))
    x = keras.layers.Dense(8, activation="relu", name="dense_in")(inputs)
    x = keras.layers.LayerNormalization(name="layer_norm")(x)
    outputs = keras.layers.Dense(3, name="dense_out")(x)
    model = keras.Model(inputs, outputs)

    with pytest.warns(UserWarning, match=r"1 layer\(s\) left in float.*layer_norm \(LayerNormalization: LayerNormalization is not supported"):
        qat = quantize(model)

    report = quantization_report(qat)
    assert [entry.name for entry in report.skipped] == ["layer_norm"]
    assert {"dense_in", "dense_out"} <= {entry.name for entry in report.quantized}
    assert isinstance(qat.get_layer("float_layer_norm"), FloatPassthrough)
    x_data = np.random.default_rng(0).normal(size=(4, 12)).astype("float32")
    np.testing.assert_allclose(
        calibrate(qat, x_data, batches=1).predict(x_data, verbose=0), model.predict(x_data, verbose=0), atol=0.1
    )


def test_report_names_folded_batchnorm_and_fused_activation():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    report = quantization_report(quantize(keras.Model(inputs, outputs)))

    details = {entry.name: entry.detail for entry in report.quantized}
    assert details["conv"] == "kernel per-channel, folded bn, fused relu6 (relu6)"
    assert "bn" not in details and "relu6" not in details
    assert report.skipped == []


def test_nested_functional_model_is_quantized_inside():
    inner_inputs = keras.Input((8, 8, 3))
    inner = keras.Model(inner_inputs, keras.layers.Conv2D(4, 3, name="inner_conv")(inner_inputs), name="backbone")
    inputs = keras.Input((8, 8, 3))
    x = inner(inputs)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x))
    qat = quantize(keras.Model(inputs, outputs))

    nested = qat.get_layer("backbone")
    assert isinstance(nested, keras.Model)
    assert any(isinstance(layer, QuantizeWrapper) and layer.layer.name == "inner_conv" for layer in nested.layers)
    # The outer model quantizes the input once; the nested model does not again.
    assert not any(isinstance(layer, FakeQuant) for layer in nested.layers)


def test_subclassed_model_is_rejected_with_a_recipe():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match="functional API"):
        quantize(model)


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match=r"Expected `scheme` to be one of \['int8'\]"):
        quantize(compile_for_classification(example_cnn()), scheme="int4")


def test_package_does_not_import_keras_internals():
    from pathlib import Path

    import kstruct.quantization

    package = Path(kstruct.quantization.__file__).parent
    offenders = [p.name for p in package.glob("*.py") if "keras.src" in p.read_text()]
    assert offenders == []
