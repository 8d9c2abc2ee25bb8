"""Which layers can be pruned, which weights of each, along which axis their input channels lie,
and, for the rest, why not.

Most layers hold one prunable weight (a kernel). Recurrent layers hold two (tfmot prunes both
the kernel and the recurrent kernel of LSTM, GRU and SimpleRNN), and the Keras wrappers
`Bidirectional` and `TimeDistributed` hold the prunable weights of the layers inside them, so a
weight is named by its path from the layer: `"forward_layer.cell.recurrent_kernel"`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class PrunableWeight:
    """The weight a layer type is pruned on (a dotted attribute path) and its input-channel axis (for N:M)."""

    attribute: str
    input_axis: int

    def of(self, layer: keras.layers.Layer):
        """The variable this path names in `layer`."""
        return functools.reduce(getattr, self.attribute.split("."), layer)

    def under(self, prefix: str) -> "PrunableWeight":
        return PrunableWeight(f"{prefix}.{self.attribute}", self.input_axis)


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

# Recurrent cells: the input kernel and the recurrent kernel, both (inputs, gates * units).
RECURRENT_CELLS: tuple[type, ...] = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)
_RECURRENT_WEIGHTS = (PrunableWeight("cell.kernel", 0), PrunableWeight("cell.recurrent_kernel", 0))

# Why a layer with weights is left dense, for the kinds users ask about.
_SKIP_REASONS: dict[type, str] = {
    keras.layers.Embedding: "a lookup table: each row is one token's vector, and zeroing rows loses tokens",
    keras.layers.BatchNormalization: "normalization statistics, not a weight matrix",
    keras.layers.LayerNormalization: "normalization scales, not a weight matrix",
}


def prunable_weight(layer: keras.layers.Layer) -> PrunableWeight | None:
    """Returns how a single-kernel `layer` is pruned, or None when it is not one of `PRUNABLE_LAYERS`."""
    for layer_type, weight in PRUNABLE_LAYERS.items():
        if isinstance(layer, layer_type):
            return weight
    return None


def prunable_weights(layer: keras.layers.Layer) -> list[PrunableWeight]:
    """Every weight of `layer` that pruning masks, including those of the layers a Keras wrapper holds.

    Empty when kstruct does not prune `layer` (`skip_reason` says why).
    """
    single = prunable_weight(layer)
    if single is not None:
        return [single]
    if isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, RECURRENT_CELLS):
        return list(_RECURRENT_WEIGHTS)
    if isinstance(layer, keras.layers.Bidirectional):
        return [w.under("forward_layer") for w in prunable_weights(layer.forward_layer)] + [
            w.under("backward_layer") for w in prunable_weights(layer.backward_layer)
        ]
    if isinstance(layer, keras.layers.TimeDistributed):
        return [w.under("layer") for w in prunable_weights(layer.layer)]
    return []


def skip_reason(layer: keras.layers.Layer) -> str:
    """Why `prune` leaves `layer` dense, in a few words (for a layer `prunable_weights` returns nothing for)."""
    if not layer.weights:
        return "no weights"
    for layer_type, reason in _SKIP_REASONS.items():
        if isinstance(layer, layer_type):
            return reason
    if isinstance(layer, keras.layers.RNN):
        return (
            f"a recurrent layer with a {type(layer.cell).__name__} cell; kstruct prunes the kernels of "
            + ", ".join(cell.__name__ for cell in RECURRENT_CELLS)
        )
    if isinstance(layer, (keras.layers.Bidirectional, keras.layers.TimeDistributed)):
        inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer.layer
        return f"wraps a {type(inner).__name__}: {skip_reason(inner)}"
    return f"no kernel kstruct prunes (prunable: {', '.join(t.__name__ for t in PRUNABLE_LAYERS)}, LSTM, GRU, SimpleRNN)"
