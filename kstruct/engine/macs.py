"""One multiply-accumulate count for the report notes of the steps that change a model's structure."""

from __future__ import annotations

import keras
import numpy as np

_COUNTED = ("Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")


def macs(model: keras.Model) -> int:
    """Multiply-accumulates of one sample through the Conv, Depthwise, Separable and Dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += macs(layer)
            continue
        kind = type(layer).__name__
        if kind not in _COUNTED or not layer.built:
            continue
        positions = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) > 2 else 1
        if kind.startswith("Separable"):
            depthwise, pointwise = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
            total += positions * (int(np.prod(depthwise)) + int(np.prod(pointwise)))
        else:
            total += positions * int(np.prod(layer.kernel.shape))
    return total
