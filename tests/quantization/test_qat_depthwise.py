"""Depthwise kernels in QAT: BatchNorm folded per output channel, int8 per channel, against numpy references.

A depthwise kernel is `(kh, kw, C, M)` and its output channel `c * M + m` comes from
`kernel[..., c, m]`; TFLite quantizes it per output channel, which for `M == 1` is axis 2
of the Keras kernel. tests/backends/test_qat_depthwise.py runs the same checks on JAX and PyTorch.
"""

import keras
import numpy as np
import pytest

from kstruct.quantization import QuantizeWrapper, quantize, quantize_weight


def fold_reference(kernel: np.ndarray, gamma, beta, mean, variance, epsilon: float, bias=None):
    """The folded depthwise kernel and bias, one output channel `c * M + m` at a time."""
    kernel = np.asarray(kernel, "float64")
    folded = np.empty_like(kernel)
    channels, multiplier = kernel.shape[-2:]
    bias = np.zeros(channels * multiplier) if bias is None else np.asarray(bias, "float64")
    folded_bias = np.empty(channels * multiplier)
    for c in range(channels):
        for m in range(multiplier):
            k = c * multiplier + m
            scale = gamma[k] / np.sqrt(variance[k] + epsilon)
            folded[..., c, m] = kernel[..., c, m] * scale
            folded_bias[k] = beta[k] + (bias[k] - mean[k]) * scale
    return folded, folded_bias


def fake_quant_reference(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric narrow-range int8 (scale max|w| / 127, round half up), per tensor or per slice along `axis`."""
    weight = np.asarray(weight, "float64")
    if axis is None:
        bound = np.abs(weight).max()
    else:
        others = tuple(i for i in range(weight.ndim) if i != axis % weight.ndim)
        bound = np.abs(weight).max(axis=others, keepdims=True)
    scale = np.where(bound > 0, bound, 1.0) / 127.0
    return np.floor(weight / scale + 0.5) * scale


def depthwise_bn_model(multiplier: int, channels: int = 4, separable: bool = False, seed: int = 0):
    """Input -> DepthwiseConv2D (or SeparableConv2D) -> BatchNormalization with random statistics."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((6, 6, channels))
    if separable:
        layer = keras.layers.SeparableConv2D(5, 3, depth_multiplier=multiplier, name="conv")
    else:
        layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=multiplier, name="conv")
    batch_norm = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, batch_norm(layer(inputs)))
    outputs = batch_norm.moving_mean.shape[0]
    batch_norm.set_weights(
        [rng.uniform(0.5, 2.0, outputs), rng.normal(size=outputs), rng.normal(size=outputs), rng.uniform(0.2, 3.0, outputs)]
    )
    return model


def check_depthwise_fold_and_quantization(multiplier: int) -> None:
    """The wrapper's folded and fake-quantized depthwise kernel equal the numpy references, shape unchanged."""
    model = depthwise_bn_model(multiplier)
    layer, batch_norm = model.get_layer("conv"), model.get_layer("bn")
    wrapper = next(w for w in quantize(model).layers if isinstance(w, QuantizeWrapper))
    assert wrapper.batch_norm is not None

    gamma, beta, mean, variance = batch_norm.get_weights()
    kernel, bias = layer.get_weights()
    expected_kernel, expected_bias = fold_reference(kernel, gamma, beta, mean, variance, batch_norm.epsilon, bias)
    kernels, folded_bias = wrapper.folded_weights()
    folded = keras.ops.convert_to_numpy(kernels["kernel"])
    assert folded.shape == kernel.shape
    np.testing.assert_allclose(folded, expected_kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded_bias), expected_bias, rtol=1e-5, atol=1e-5)

    axis = wrapper.quantized_kernels["kernel"]
    assert axis == (2 if multiplier == 1 else None)  # per output channel where TFLite quantizes so
    quantized = keras.ops.convert_to_numpy(wrapper.quantized_weights()[0]["kernel"])
    assert quantized.shape == kernel.shape
    np.testing.assert_allclose(quantized, fake_quant_reference(folded, axis), rtol=1e-5, atol=1e-6)


def check_separable_fold_and_quantization() -> None:
    """SeparableConv2D: BN scales the pointwise kernel's outputs; both kernels are int8 per channel."""
    model = depthwise_bn_model(1, separable=True)
    layer, batch_norm = model.get_layer("conv"), model.get_layer("bn")
    wrapper = next(w for w in quantize(model).layers if isinstance(w, QuantizeWrapper))
    gamma, _, _, variance = batch_norm.get_weights()
    depthwise, pointwise, _ = layer.get_weights()
    kernels, _ = wrapper.folded_weights()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernels["depthwise_kernel"]), depthwise, rtol=1e-6)
    expected_pointwise = pointwise * gamma / np.sqrt(variance + batch_norm.epsilon)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernels["pointwise_kernel"]), expected_pointwise, rtol=1e-5)
    quantized, _ = wrapper.quantized_weights()
    for name, axis in (("depthwise_kernel", 2), ("pointwise_kernel", -1)):
        assert wrapper.quantized_kernels[name] == axis
        value = keras.ops.convert_to_numpy(quantized[name])
        expected = fake_quant_reference(keras.ops.convert_to_numpy(kernels[name]), axis)
        assert value.shape == expected.shape
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def check_quantize_weight_along_a_middle_axis() -> None:
    """Per-channel ranges along axis 2 of a 4-D weight, including one whose last axis has as many entries."""
    rng = np.random.default_rng(3)
    for shape in ((3, 3, 5, 1), (2, 3, 4, 4), (3, 3, 6, 2)):
        weight = rng.normal(size=shape).astype("float32") * rng.uniform(0.1, 3.0, size=(1, 1, shape[2], 1))
        value = keras.ops.convert_to_numpy(quantize_weight(weight, 2))
        assert value.shape == shape
        np.testing.assert_allclose(value, fake_quant_reference(weight, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_kernel_folds_each_output_channel_and_quantizes_along_it(multiplier):
    check_depthwise_fold_and_quantization(multiplier)


def test_separable_pointwise_kernel_folds_and_both_kernels_quantize_per_channel():
    check_separable_fold_and_quantization()


def test_quantize_weight_along_a_middle_axis_matches_numpy():
    check_quantize_weight_along_a_middle_axis()
