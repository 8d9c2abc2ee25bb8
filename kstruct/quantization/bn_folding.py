"""Folding BatchNormalization into the Conv/Dense before it, as TFLite runs it.

At inference a BatchNormalization after a linear layer is an affine map per
output channel, so TFLite executes `conv(x, W * g) + b'` with
`g = gamma / sqrt(moving_variance + epsilon)` and
`b' = beta + (b - moving_mean) * g`: one int8 kernel whose weights are the
folded `W * g`. QAT must quantize those folded weights, not `W`.

While training, the batch statistics still normalize (as Jacob et al., 2018,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
Only Inference", section 3.2): the convolution uses the folded weights computed
with the moving variance, quantized exactly as at inference, and the output is
corrected by `sigma_moving / sigma_batch`. At inference the correction is 1 and
what was trained is what the int8 file computes.
"""

from __future__ import annotations

import keras
from keras import ops


def can_fold(batch_norm: keras.layers.Layer, rank: int) -> str | None:
    """None when `batch_norm`, on a rank-`rank` tensor, folds into the channels-last layer before it; else why not."""
    if not isinstance(batch_norm, keras.layers.BatchNormalization):
        return "not a BatchNormalization"
    axis = batch_norm.axis
    if not isinstance(axis, int) or axis % rank != rank - 1:
        return f"normalizes axis {axis}, not the channels-last axis"
    if getattr(batch_norm, "renorm", False):
        return "uses batch renormalization"
    return None


def _param(batch_norm, name: str, default: float, channels: int):
    variable = getattr(batch_norm, name, None)
    if variable is None:
        return ops.full((channels,), default)
    return ops.convert_to_tensor(variable)


def affine(batch_norm: keras.layers.Layer):
    """`(gamma, beta, moving_mean, moving_variance)` as tensors; gamma 1 / beta 0 when not learned."""
    channels = int(batch_norm.moving_mean.shape[-1])
    gamma = _param(batch_norm, "gamma", 1.0, channels)
    beta = _param(batch_norm, "beta", 0.0, channels)
    return gamma, beta, ops.convert_to_tensor(batch_norm.moving_mean), ops.convert_to_tensor(batch_norm.moving_variance)


def folded_scale(batch_norm: keras.layers.Layer):
    """`gamma / sqrt(moving_variance + epsilon)`: the per-channel factor folded into the weights."""
    gamma, _, _, variance = affine(batch_norm)
    return gamma * ops.rsqrt(variance + batch_norm.epsilon)


def folded_bias(batch_norm: keras.layers.Layer, bias=None):
    """`beta + (bias - moving_mean) * scale`: the bias of the folded layer."""
    _, beta, mean, _ = affine(batch_norm)
    bias = ops.zeros_like(mean) if bias is None else bias
    return beta + (bias - mean) * folded_scale(batch_norm)


def batch_statistics(outputs):
    """Mean and (biased) variance of `outputs` over every axis but the channels-last one."""
    axes = list(range(len(outputs.shape) - 1))
    return ops.moments(outputs, axes=axes)


def update_moving_statistics(batch_norm: keras.layers.Layer, mean, variance) -> None:
    """Moves the layer's moving mean/variance toward a batch's, with its own momentum."""
    momentum = batch_norm.momentum
    batch_norm.moving_mean.assign(batch_norm.moving_mean * momentum + ops.stop_gradient(mean) * (1.0 - momentum))
    batch_norm.moving_variance.assign(
        batch_norm.moving_variance * momentum + ops.stop_gradient(variance) * (1.0 - momentum)
    )


def training_correction(batch_norm: keras.layers.Layer, mean, variance, bias=None):
    """`(factor, shift)` so that `conv(x, W*g) * factor + shift` equals batch-statistics BN of `conv(x, W) + bias`."""
    gamma, beta, _, moving_variance = affine(batch_norm)
    epsilon = batch_norm.epsilon
    batch_inv_sigma = ops.rsqrt(variance + epsilon)
    factor = ops.sqrt(moving_variance + epsilon) * batch_inv_sigma
    bias = ops.zeros_like(mean) if bias is None else bias
    shift = beta + (bias - mean) * gamma * batch_inv_sigma
    return factor, shift
