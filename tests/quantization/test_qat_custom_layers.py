"""Registered custom layers: float with a warning, or int8 when they declare `kstruct_quantize`."""

import keras
import numpy as np
import pytest
import tflite_export
from keras import ops

import kstruct
from kstruct.quantization import QuantizeWrapper, quantization_report, quantize
from qat_helpers import assert_within_one_step, calibrate, non_integer_tensors, op_names


@keras.saving.register_keras_serializable(package="kstruct_tests")
class Mix(keras.layers.Layer):
    """A matmul with no compute_output_shape: all Keras knows of it is its call."""

    def build(self, input_shape):
        self.mixing = self.add_weight(shape=(input_shape[-1], input_shape[-1]), initializer="glorot_uniform")

    def call(self, inputs):
        return ops.matmul(inputs, self.mixing)


@keras.saving.register_keras_serializable(package="kstruct_tests")
class DeclaredMix(Mix):
    kstruct_quantize = {"mixing": None}  # per-tensor, as TFLite's FULLY_CONNECTED takes it


def _model(layer):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _x():
    return np.random.default_rng(0).normal(size=(32, 8)).astype("float32")


def test_undeclared_custom_layer_runs_in_float_with_a_warning_saying_how_to_declare():
    warning = (
        r"mix \(Mix: custom layer Mix runs in float; to quantize it, declare its int8 weights "
        r"with a `kstruct_quantize` attribute"
    )
    with pytest.warns(UserWarning, match=warning):
        qat = quantize(_model(Mix(name="mix")))
    assert [entry.name for entry in quantization_report(qat).skipped] == ["mix"]

    x = _x()
    blob = tflite_export.convert(calibrate(qat, x), "int8", representative_data=x)
    agreement = np.mean(tflite_export.predict(blob, x).argmax(-1) == qat.predict(x, verbose=0).argmax(-1))
    assert agreement >= 0.95


def test_declared_custom_layer_is_quantized_and_its_int8_file_matches():
    model = _model(DeclaredMix(name="mix"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left in float
        qat = quantize(model)
    (wrapper,) = [layer for layer in qat.layers if isinstance(layer, QuantizeWrapper) and layer.layer.name == "mix"]
    assert wrapper.quantized_kernels == {"mixing": None}
    np.testing.assert_array_equal(wrapper.layer.mixing.numpy(), model.get_layer("mix").mixing.numpy())

    x = _x()
    blob = tflite_export.convert(calibrate(qat, x), "int8", representative_data=x)
    assert op_names(blob).count("FULLY_CONNECTED") == 3 and non_integer_tensors(blob) == []
    assert_within_one_step(blob, qat, x)


def test_a_malformed_declaration_names_the_layer_and_the_expected_form():
    class Bad(Mix):
        kstruct_quantize = ["mixing"]

    with pytest.raises(TypeError, match=r"Expected `kstruct_quantize` on layer `bad` to be a dict of weight attribute"):
        quantize(_model(Bad(name="bad")))


def _tiny_mobilenet_backbone():
    import keras_hub

    # Built from a config, as a preset would be, but tiny and with no weights download.
    config = dict(
        stackwise_expansion=[[16], [24]],
        stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [8]],
        stackwise_kernel_size=[[3], [3]],
        stackwise_num_strides=[[2], [1]],
        stackwise_se_ratio=[[None], [0.25]],
        stackwise_activation=[["relu"], ["hard_swish"]],
        stackwise_padding=[[1], [1]],
        output_num_filters=16,
        depthwise_filters=8,
        depthwise_stride=1,
        depthwise_residual=False,
        last_layer_filter=16,
        image_shape=(32, 32, 3),
        input_num_filters=8,
    )
    return keras_hub.models.MobileNetBackbone.from_config(config)


@pytest.mark.slow
def test_keras_hub_mobilenet_backbone_under_qat_converts_to_int8():
    keras.utils.set_random_seed(0)
    backbone = _tiny_mobilenet_backbone()
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(48, 32, 32, 3)).astype("float32")
    y = (x[:, :, :, 0].mean((1, 2)) > 0.5).astype("int32")

    with pytest.warns(UserWarning, match=r"left in float"):
        result = kstruct.optimize(model, "qat", train_data=(x, y), epochs=1, target="int8", verbose=0)

    stage = result.report.stages[-1]
    # Outputs near 0.5 after one epoch make top-1 agreement meaningless: compare the probabilities.
    assert stage.notes["target"] == "int8" and stage.max_abs_diff <= 0.1
    assert "CONV_2D" in op_names(result.tflite)
    assert "block_0_0_0" in stage.notes["float_layers"]  # keras-hub's composite blocks stay float
