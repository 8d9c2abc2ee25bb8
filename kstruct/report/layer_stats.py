"""Per-layer numbers for the report and `layers.png`: sparsity, live channels, distinct kernel values."""

from __future__ import annotations

import keras
import numpy as np

from kstruct._graph import leaf_layers
from kstruct.pruning.prunable import prunable_weights


def _deployed_kernel(layer: keras.layers.Layer) -> tuple[str, np.ndarray] | None:
    """(name of the original layer, the kernel as the layer computes with it), or None.

    Wrappers declare what they compute with: a pruning wrapper its masked weight,
    a QAT wrapper its fake-quantized kernels; no wrapper class is imported.
    """
    inner = layer.layer if isinstance(layer, keras.layers.Wrapper) and not prunable_weights(layer) else layer
    how = prunable_weights(inner)
    if not how or not inner.built:
        return None
    if hasattr(layer, "quantized_weights"):
        quantized = layer.quantized_weights()[0]
        values = [quantized.get(h.attribute, h.of(inner)) for h in how]
    elif hasattr(layer, "masked_weights"):  # one per prunable weight (recurrent layers hold several)
        values = layer.masked_weights()
    elif hasattr(layer, "masked_weight"):  # a channel mask's wrapper
        values = [layer.masked_weight()]
    else:
        values = [h.of(inner) for h in how]
    kernels = [np.asarray(keras.ops.convert_to_numpy(value)) for value in values]
    if len(kernels) > 1:
        # A recurrent layer: kernel and recurrent kernel (of each direction) share their
        # output columns (gates x units), so their rows stack into one matrix.
        return inner.name, np.concatenate([k.reshape(-1, k.shape[-1]) for k in kernels], axis=0)
    kernel, single = kernels[0], how[0]
    if isinstance(_leaf(inner), keras.layers.DepthwiseConv2D):
        kernel = kernel.reshape(kernel.shape[:-2] + (-1,))  # in_channels * multiplier outputs
    elif single.input_axis == -1:  # transposed convolutions keep output channels at -2
        kernel = np.moveaxis(kernel, -2, -1)
    return inner.name, kernel


def _leaf(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer a TimeDistributed holds (nested ones opened), or `layer` itself."""
    while isinstance(layer, keras.layers.TimeDistributed):
        layer = layer.layer
    return layer


def layer_stats(model: keras.Model) -> dict[str, dict[str, float | int]]:
    """For each prunable layer (by its original name): sparsity, channels, live channels, distinct values.

    A live channel is an output channel with at least one non-zero weight, so channels
    zeroed by structured pruning show up before they are cut out.
    """
    stats = {}
    for layer in leaf_layers(model):
        found = _deployed_kernel(layer)
        if found is None:
            continue
        name, kernel = found
        columns = kernel.reshape(-1, kernel.shape[-1])
        stats[name] = {
            "sparsity": float(np.mean(kernel == 0)),
            "channels": int(columns.shape[1]),
            "live_channels": int(np.count_nonzero(np.any(columns != 0, axis=0))),
            "distinct_values": int(np.unique(kernel).size),
        }
    return stats


def compare_layers(before: keras.Model, after: keras.Model) -> list[dict]:
    """One row per layer of `before` (then any new in `after`): its stats at the start and the end."""
    start, end = layer_stats(before), layer_stats(after)
    names = list(start) + [name for name in end if name not in start]
    return [{"layer": name, "before": start.get(name), "after": end.get(name)} for name in names]
