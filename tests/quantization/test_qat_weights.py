"""Weight quantization: symmetric narrow-range int8, per channel for convolutions, per tensor for Dense."""

import keras
import numpy as np

from kstruct.quantization import QuantizeWrapper, quantize_weight
from qat_helpers import weight_tensors


def test_weight_quantization_is_symmetric_narrow_range_per_channel():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32") * np.arange(1, 7, dtype="float32")
    kernel[0, 0, 0, :] = 0.0
    quantized = keras.ops.convert_to_numpy(quantize_weight(kernel, axis=-1))

    scales = np.abs(kernel).max(axis=(0, 1, 2)) / 127.0
    levels = quantized / scales
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert np.abs(np.round(levels)).max() == 127  # narrow range: -127..127, never -128
    np.testing.assert_array_equal(quantized[0, 0, 0, :], 0.0)


def test_per_tensor_quantization_shares_one_scale():
    kernel = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    quantized = keras.ops.convert_to_numpy(quantize_weight(kernel))
    levels = quantized / (np.abs(kernel).max() / 127.0)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)


def test_int8_file_has_per_channel_conv_scales_and_per_tensor_dense_scale(qat_cnn, qat_cnn_int8):
    wrappers = {w.layer.name: w for w in qat_cnn.layers if isinstance(w, QuantizeWrapper)}
    convs = weight_tensors(qat_cnn_int8, "CONV_2D")
    denses = weight_tensors(qat_cnn_int8, "FULLY_CONNECTED")
    assert len(convs) == 2 and len(denses) == 2

    for tensor, name in zip(convs, ["conv1", "conv2"]):
        kernels, _ = wrappers[name].folded_weights()
        expected = np.abs(keras.ops.convert_to_numpy(kernels["kernel"])).max(axis=(0, 1, 2)) / 127.0
        params = tensor["quantization_parameters"]
        np.testing.assert_allclose(params["scales"], expected, rtol=1e-5)
        assert params["quantized_dimension"] == 0  # output channels in TFLite's (out, h, w, in)
        assert not np.any(params["zero_points"])

    for tensor, name in zip(denses, ["dense1", "classifier"]):
        kernels, _ = wrappers[name].folded_weights()
        expected = np.abs(keras.ops.convert_to_numpy(kernels["kernel"])).max() / 127.0
        np.testing.assert_allclose(tensor["quantization_parameters"]["scales"], [expected], rtol=1e-5)
