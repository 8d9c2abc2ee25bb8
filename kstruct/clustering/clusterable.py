"""Which layers can be clustered, which of their weights, and along which axis their output channels lie."""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import keras


@dataclass(frozen=True)
class ClusterableWeight:
    """A weight clustered on a layer type: its attribute path and its output-channel axis (for per_channel)."""

    path: str
    channel_axis: int


_CONV = (ClusterableWeight("kernel", -1),)
_TRANSPOSED = (ClusterableWeight("kernel", -2),)  # transposed kernels are (..., out, in)
_RECURRENT = (ClusterableWeight("cell.kernel", -1), ClusterableWeight("cell.recurrent_kernel", -1))

# Layer type -> the weights clustered. SeparableConv on its pointwise kernel, which
# holds most of its weights. Transposed convs come first: they subclass the convs.
CLUSTERABLE_LAYERS: dict[type, tuple[ClusterableWeight, ...]] = {
    keras.layers.Conv1DTranspose: _TRANSPOSED,
    keras.layers.Conv2DTranspose: _TRANSPOSED,
    keras.layers.Conv3DTranspose: _TRANSPOSED,
    keras.layers.DepthwiseConv2D: (ClusterableWeight("kernel", -2),),
    keras.layers.SeparableConv1D: (ClusterableWeight("pointwise_kernel", -1),),
    keras.layers.SeparableConv2D: (ClusterableWeight("pointwise_kernel", -1),),
    keras.layers.Dense: _CONV,
    keras.layers.Conv1D: _CONV,
    keras.layers.Conv2D: _CONV,
    keras.layers.Conv3D: _CONV,
    keras.layers.Embedding: (ClusterableWeight("embeddings", -1),),
    keras.layers.LSTM: _RECURRENT,
    keras.layers.GRU: _RECURRENT,
}

# Clustered only when named in `layers=`: a depthwise kernel has few weights per
# channel, and tfmot found the accuracy lost there does not come back.
OPT_IN_LAYERS: tuple[type, ...] = (keras.layers.DepthwiseConv2D,)


def clusterable_weights(layer: keras.layers.Layer) -> tuple[ClusterableWeight, ...]:
    """The weights kstruct clusters on `layer`; empty when it does not cluster its type."""
    for layer_type, weights in CLUSTERABLE_LAYERS.items():
        if isinstance(layer, layer_type):
            return weights
    return ()


def is_opt_in(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, OPT_IN_LAYERS)


def resolve(layer: keras.layers.Layer, path: str):
    """The variable at `path` ("kernel", "cell.kernel") on `layer`."""
    return reduce(getattr, path.split("."), layer)
