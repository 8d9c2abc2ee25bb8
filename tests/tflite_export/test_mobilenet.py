"""End to end on a real architecture: MobileNetV2 (alpha 0.35, 96x96), random weights."""

import numpy as np
import pytest

import tflite_export


@pytest.fixture(scope="module")
def mobilenet():
    import keras

    keras.utils.set_random_seed(5)
    return keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["float32", "gpu", "int8"])
def test_mobilenet_v2_converts_runs_and_matches_keras(mobilenet, target):
    rng = np.random.default_rng(0)
    calib = rng.random((16, 96, 96, 3), dtype=np.float32)
    x = rng.random((4, 96, 96, 3), dtype=np.float32)
    blob = tflite_export.convert(mobilenet, target, calib if target == "int8" else None)
    a = tflite_export.analyze(blob)
    assert not a.uses_flex and not a.has_dynamic_shape_ops
    assert "DEPTHWISE_CONV_2D" in a.ops
    v = tflite_export.verify(blob, mobilenet, x)
    if target == "float32":
        assert v.max_abs_diff < 1e-3 * max(v.output_range, 1e-6)
    if target == "gpu":
        assert a.gpu_compatible, a.gpu_problems
    if target == "int8":
        assert a.tensors_not_int8_int32 == []
    assert tflite_export.benchmark(blob, runs=3, warmup=1).median_ms > 0
