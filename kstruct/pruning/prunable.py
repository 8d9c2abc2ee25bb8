"""Which layers can be pruned, which weight of each, and along which axis its input channels lie."""

from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class PrunableWeight:
    """The weight attribute a layer type is pruned on, and its input-channel axis (for N:M)."""

    attribute: str
    input_axis: int


# Layer type -> the weight pruned. DepthwiseConv2D is pruned on its depthwise kernel
# (tfmot skips it); SeparableConv2D on its pointwise kernel, which holds most of its weights.
PRUNABLE_LAYERS: dict[type, PrunableWeight] = {
    keras.layers.Dense: PrunableWeight("kernel", 0),
    keras.layers.Conv1D: PrunableWeight("kernel", -2),
    keras.layers.Conv2D: PrunableWeight("kernel", -2),
    keras.layers.Conv3D: PrunableWeight("kernel", -2),
    keras.layers.Conv1DTranspose: PrunableWeight("kernel", -1),
    keras.layers.Conv2DTranspose: PrunableWeight("kernel", -1),
    keras.layers.Conv3DTranspose: PrunableWeight("kernel", -1),
    keras.layers.DepthwiseConv2D: PrunableWeight("kernel", -2),
    keras.layers.SeparableConv2D: PrunableWeight("pointwise_kernel", -2),
}


def prunable_weight(layer: keras.layers.Layer) -> PrunableWeight | None:
    """Returns how `layer` is pruned, or None when kstruct does not prune its type."""
    for layer_type, weight in PRUNABLE_LAYERS.items():
        if isinstance(layer, layer_type):
            return weight
    return None
