"""Kernels constrained to declared values (cluster-preserving QAT).

A technique that restricts a kernel to a few values (weight clustering) declares
them on the stripped layer in the attribute `kstruct_kernel_values`:
`{kernel attribute: {"values": (k,) or (channels, k) array, "axis": channel axis or None}}`.
QAT reads that declaration (never the technique's classes) and snaps each
kernel to its nearest declared value before BatchNorm folding and fake
quantization. Snapping before folding keeps the clusters: folding scales each
output channel by one factor, so a channel still holds at most `k` values, and
so does its per-channel int8 kernel. The snapped kernel is kept in a variable
(updated by each training step) that inference and the converter read: the
converter does not fold the snapping ops into a constant.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

KERNEL_VALUES_ATTRIBUTE = "kstruct_kernel_values"


def declared_kernel_values(layer: keras.layers.Layer, names) -> dict:
    """`{kernel name: {"values": nested list, "axis": int | None}}` declared on `layer` for the kernels in `names`."""
    declared = getattr(layer, KERNEL_VALUES_ATTRIBUTE, None) or {}
    return {
        name: {"values": np.asarray(entry["values"], "float32").tolist(), "axis": entry["axis"]}
        for name, entry in declared.items()
        if name in names
    }


def snap(kernel, values, axis: int | None):
    """Each weight replaced by its nearest value (per tensor, or per channel along `axis`); straight-through gradient.

    Written as a staircase, `v0 + sum_j (v_j - v_j-1) * [w > midpoint_j]` over the
    sorted values, not with argmin and gather: the TFLite converter folds these
    ops on the frozen kernel, so the file holds the snapped int8 constant.
    """
    values = np.sort(np.asarray(values, "float32"), axis=-1)
    steps = ops.convert_to_tensor(np.diff(values, axis=-1), dtype=kernel.dtype)
    midpoints = ops.convert_to_tensor((values[..., 1:] + values[..., :-1]) / 2, dtype=kernel.dtype)
    lowest = ops.convert_to_tensor(values[..., 0], dtype=kernel.dtype)
    moved = kernel if axis is None else ops.moveaxis(kernel, axis, -1)
    above = ops.cast(ops.greater(ops.expand_dims(moved, -1), midpoints), kernel.dtype)
    snapped = lowest + ops.sum(above * steps, axis=-1)
    if axis is not None:
        snapped = ops.moveaxis(snapped, -1, axis)
    return kernel + ops.stop_gradient(snapped - kernel)
