import keras
import numpy as np
import pytest
import tflite_export

from kstruct.search import NATIVE_ACTIVATIONS, space
from tests.search.conftest import tiny_cnn


def one_layer(activation):
    return keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation=activation), keras.layers.Flatten(), keras.layers.Dense(2)]
    )


def test_required_activations_are_native_on_int8_and_gpu():
    for target in ("int8", "gpu"):
        assert {"relu", "relu6", "leaky_relu", "hard_silu", "silu", "tanh"} <= set(NATIVE_ACTIVATIONS[target])


@pytest.mark.parametrize("activation", NATIVE_ACTIVATIONS["int8"])
def test_each_int8_activation_converts_to_integer_ops_only(activation):
    calibration = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    blob = tflite_export.convert(one_layer(activation), "int8", calibration)
    analysis = tflite_export.analyze(blob, gpu_analyzer=False)
    assert "DEQUANTIZE" not in analysis.ops
    assert not analysis.tensors_not_int8_int32


def test_elu_is_left_out_of_int8_because_it_runs_in_float():
    calibration = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    blob = tflite_export.convert(one_layer("elu"), "int8", calibration)
    assert "DEQUANTIZE" in tflite_export.analyze(blob, gpu_analyzer=False).ops
    assert "elu" not in NATIVE_ACTIVATIONS["int8"]


@pytest.mark.parametrize("target", ["edgetpu", "micro"])
def test_activations_of_the_integer_devices_pass_their_op_check(target):
    calibration = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    for activation in NATIVE_ACTIVATIONS[target]:
        blob = tflite_export.convert(one_layer(activation), target, calibration)
        assert tflite_export.check(blob, target).ok, activation


def test_space_offers_only_the_targets_native_activations():
    for target in ("int8", "edgetpu", "gpu"):
        hypermodel = space(tiny_cnn(), target=target)
        assert hypermodel.activations
        for site in hypermodel.activations:
            assert set(site.choices) == set(NATIVE_ACTIVATIONS[target])
            assert site.layer != "classifier"


def test_asking_for_a_foreign_activation_names_the_native_ones():
    with pytest.raises(ValueError, match="do not run natively on target='edgetpu'"):
        space(tiny_cnn(), target="edgetpu", activations=["relu", "leaky_relu"])
