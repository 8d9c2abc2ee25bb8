"""check() and the target checks convert() runs: gpu, edgetpu, micro."""

import warnings

import numpy as np
import pytest

import tflite_export
from tflite_export import CompatibilityError, EdgeTpuCpuFallbackWarning
from tflite_export.targets import EDGETPU_OPS, GPU_OPS, MICRO_OPS


def _model(*layers, input_shape=(8,)):
    import keras

    return keras.Sequential([keras.Input(input_shape), *layers])


def _gelu_model():
    import keras

    keras.utils.set_random_seed(3)
    return _model(keras.layers.Dense(8), keras.layers.Activation("gelu"), keras.layers.Dense(4))


_CALIB = np.random.default_rng(0).random((20, 8), dtype=np.float32)


def test_gpu_target_refuses_an_op_the_gpu_delegate_lacks():
    import keras

    assert "REVERSE_V2" not in GPU_OPS
    model = _model(keras.layers.Dense(4), keras.layers.Lambda(lambda x: keras.ops.flip(x, axis=1)))
    with pytest.raises(CompatibilityError) as info:
        tflite_export.convert(model, "gpu")
    assert info.value.ops == ("REVERSE_V2",)
    assert "target='gpu'" in str(info.value) and "REVERSE_V2" in str(info.value)


def test_gpu_check_flags_the_dynamic_batch_of_from_keras_model(trained_cnn):
    import tensorflow as tf

    blob = tf.lite.TFLiteConverter.from_keras_model(trained_cnn).convert()
    result = tflite_export.check(blob, "gpu")
    assert not result.ok
    assert "SHAPE" in result.unsupported_ops
    assert any("dynamic shapes" in p for p in result.problems)


def test_edgetpu_reports_the_op_that_stays_on_the_cpu_and_everything_after_it():
    assert "GELU" not in EDGETPU_OPS
    with pytest.warns(EdgeTpuCpuFallbackWarning, match="GELU"):
        blob = tflite_export.convert(_gelu_model(), "edgetpu", _CALIB)
    result = tflite_export.check(blob, "edgetpu")
    ops = tflite_export.analyze(blob).ops
    first = ops.index("GELU")
    assert result.unsupported_ops == ["GELU"]
    assert result.cpu_ops == [f"#{i} {op}" for i, op in enumerate(ops) if i >= first]


def test_edgetpu_strict_raises_instead_of_warning():
    with pytest.raises(CompatibilityError) as info:
        tflite_export.convert(_gelu_model(), "edgetpu", _CALIB, strict=True)
    assert info.value.ops == ("GELU",)


def test_edgetpu_example_cnn_maps_fully(cnn_blob):
    result = tflite_export.check(cnn_blob("edgetpu"), "edgetpu")
    assert result.ok and result.cpu_ops == [], result.problems


def test_micro_rejects_an_op_outside_its_table():
    assert "GELU" not in MICRO_OPS
    with pytest.raises(CompatibilityError) as info:
        tflite_export.convert(_gelu_model(), "micro", _CALIB)
    assert info.value.ops == ("GELU",)
    assert "TFLite Micro does not implement" in str(info.value)


def test_micro_accepts_the_example_cnn(cnn_blob):
    assert tflite_export.check(cnn_blob("micro"), "micro").ok


def test_float_file_fails_the_edgetpu_integer_check(cnn_blob):
    result = tflite_export.check(cnn_blob("float32"), "edgetpu")
    assert not result.ok
    assert any("not 8-bit integer" in p for p in result.problems)


def test_targets_without_restrictions_always_pass(cnn_blob):
    assert tflite_export.check(cnn_blob("float32"), "float32").to_dict() == {
        "target": "float32", "ok": True, "problems": [], "unsupported_ops": [], "cpu_ops": []}


def test_example_cnn_int8_converts_without_edgetpu_warning(trained_cnn, calibration):
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgeTpuCpuFallbackWarning)
        tflite_export.convert(trained_cnn, "edgetpu", calibration)
