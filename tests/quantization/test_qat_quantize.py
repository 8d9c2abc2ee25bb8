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
from qat_helpers import calibrate, float_fallback_ops


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


def test_augmentation_layers_in_the_model_train_under_qat_and_leave_nothing_in_the_int8_file(recwarn):
    """Keras's image tutorials put RandomFlip & co. in the model: the identity outside training. They were
    left in float, with a warning naming them and a DEQUANTIZE/QUANTIZE pair each at the file's input."""
    import kstruct

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 3)), layers.RandomFlip("horizontal"), layers.RandomRotation(0.1), layers.RandomContrast(0.2),
        layers.Rescaling(1 / 255.0), layers.Conv2D(4, 3, activation="relu"), layers.GlobalAveragePooling2D(),
        layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = (rng.random((96, 8, 8, 3)) * 255).astype("float32"), rng.integers(0, 3, 96)
    result = kstruct.optimize(model, "qat", train_data=(x, y), epochs=1, batch_size=32, target="int8", verbose=0)
    qat = result.report.stages[-1]
    assert qat.notes["float_layers"] == {}
    assert not [w for w in recwarn if "left in float" in str(w.message)]
    assert float_fallback_ops(result.tflite) == []
    assert qat.agreement == 1.0 and qat.max_abs_diff <= 0.02


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
