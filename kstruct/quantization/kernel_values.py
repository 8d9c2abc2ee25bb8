"""Kernels constrained to declared values (cluster-preserving QAT).

A technique that restricts a kernel to a few values (weight clustering) declares
them on the stripped layer in the attribute `kstruct_kernel_values`:
`{kernel attribute: {"values": (k,) or (channels, k) array, "axis": channel axis or None}}`.
QAT reads that declaration (never the technique's classes), trains the values
as centroids (as tfmot's CQAT does: the weights gather on a few central values,
which gzip better), and snaps each kernel to its nearest value before BatchNorm
folding and fake quantization. Snapping before folding keeps the clusters: folding scales each
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
# A kernel holding at most this many distinct values, each shared by at least
# VALUE_SHARE weights on average, is taken as clustered: no trained float kernel
# repeats its values like that, and a clustered one does after any save and load.
MAX_HELD_VALUES = 32
VALUE_SHARE = 8


def declared_kernel_values(layer: keras.layers.Layer, names) -> dict:
    """`{kernel name: {"values": nested list, "axis": int | None}}` declared on `layer` for the kernels in `names`."""
    declared = getattr(layer, KERNEL_VALUES_ATTRIBUTE, None) or {}
    return {
        name: {"values": np.asarray(entry["values"], "float32").tolist(), "axis": entry["axis"]}
        for name, entry in declared.items()
        if name in names
    }


def held_values(kernel: np.ndarray) -> dict | None:
    """The few values a kernel already holds, per tensor or else per slice of its last axis; None if it holds many.

    A clustered kernel keeps its values through `.keras` saving, where the
    declaration (a Python attribute) does not: QAT reads them back from here.
    Snapping to values the kernel already holds changes nothing at the start, so
    a kernel that is not clustered but happens to pass (a ternary kernel, say)
    only keeps the grid it was given.
    """
    kernel = np.asarray(kernel)
    values = np.unique(kernel)
    if 2 <= values.size <= MAX_HELD_VALUES and kernel.size >= VALUE_SHARE * values.size:
        return {"values": values.tolist(), "axis": None}
    if kernel.ndim < 2:
        return None
    slices = [np.unique(part) for part in np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)]
    count = max(part.size for part in slices)
    if not 2 <= count <= MAX_HELD_VALUES or kernel.size // kernel.shape[-1] < VALUE_SHARE * count:
        return None
    padded = [np.concatenate([part, np.repeat(part[-1:], count - part.size)]) for part in slices]  # repeats snap alike
    return {"values": np.stack(padded).tolist(), "axis": kernel.ndim - 1}


def kernel_values(layer: keras.layers.Layer, names) -> dict:
    """Declared values for the kernels in `names`, else the values a kernel already holds (see `held_values`)."""
    found = declared_kernel_values(layer, names)
    for name in names:
        if name not in found:
            held = held_values(getattr(layer, name).numpy())
            if held is not None:
                found[name] = held
    return found


def snap(kernel, values, axis: int | None):
    """Each weight replaced by its nearest value (per tensor, or per channel along `axis`).

    Gradients: straight through to the kernel, and to each value the sum over the
    weights snapped to it, so that `values` (a trainable variable) train as
    centroids do. Written as a staircase, `v0 + sum_j (v_j - v_j-1) * [w > midpoint_j]`
    over the sorted values, not with argmin and gather: the TFLite converter folds
    these ops on a frozen kernel.
    """
    values = ops.sort(ops.cast(values, kernel.dtype), axis=-1)
    midpoints = ops.stop_gradient((values[..., 1:] + values[..., :-1]) / 2)
    moved = kernel if axis is None else ops.moveaxis(kernel, axis, -1)
    above = ops.stop_gradient(ops.cast(ops.greater(ops.expand_dims(moved, -1), midpoints), kernel.dtype))
    snapped = values[..., 0] + ops.sum(above * (values[..., 1:] - values[..., :-1]), axis=-1)
    if axis is not None:
        snapped = ops.moveaxis(snapped, -1, axis)
    return snapped + (kernel - ops.stop_gradient(kernel))


def quantize_clustered(kernel, table, scale=None, *, bits: int = 4):
    """A clustered kernel fake-quantized per output channel (last axis) with its values kept apart.

    Plain rounding to the grid `k * max|w_c| / (2**(bits-1) - 1)` merges two values of a
    channel that fall within one step of each other (16 cluster values on a 4-bit grid of
    15 levels often do). Here each channel's values present in the kernel get distinct
    levels, each as near its rounded level as the order allows: the largest magnitude
    keeps `+-qmax` (so the channel's scale is the one a quantizer computes from the
    result), zero stays 0, positive values get 1..qmax, negative ones -1..-qmax. A side
    with more values than levels still merges some (a channel holds at most
    `2 * qmax + 1` values). All in plain ops, which the converter folds on a frozen kernel.

    Args:
        kernel: the kernel, each weight exactly a table value times `scale` (or 0: pruned).
        table: the sorted values, `(k,)` per tensor or `(channels, k)` per channel.
        scale: the per-channel factor the kernel was multiplied by (a folded BatchNorm), or None.
        bits: the grid's bits.

    Returns:
        The kernel on the grid (exact grid values, no gradient: add a straight-through one).
    """
    qmax = float(2 ** (bits - 1) - 1)
    channels = kernel.shape[-1]
    table = ops.broadcast_to(ops.cast(table, kernel.dtype), (channels, table.shape[-1]))
    if scale is not None:
        scale = ops.reshape(ops.cast(scale, kernel.dtype), (channels, 1))
        table = ops.where(scale < 0, ops.flip(table * scale, axis=-1), table * scale)  # ascending per channel
    count = table.shape[-1]
    weights = ops.reshape(ops.stop_gradient(kernel), (-1, channels))
    midpoints = (table[:, 1:] + table[:, :-1]) / 2
    index = ops.sum(ops.cast(ops.greater(ops.expand_dims(weights, -1), midpoints), "int32"), axis=-1)
    chosen = ops.cast(ops.equal(ops.expand_dims(index, -1), ops.arange(count, dtype="int32")), kernel.dtype)
    chosen = chosen * ops.cast(ops.expand_dims(ops.not_equal(weights, 0.0), -1), kernel.dtype)
    present = ops.max(chosen, axis=0) > 0  # (channels, k): values some weight of the channel holds
    bound = ops.max(ops.abs(weights), axis=0)
    step = ops.where(bound > 0, bound, ops.ones_like(bound)) / qmax
    levels = ops.clip(ops.floor(table / ops.expand_dims(step, -1) + 0.5), -qmax, qmax)
    levels = [levels[:, j] for j in range(count)]
    positive = [present[:, j] & (table[:, j] > 0) for j in range(count)]
    negative = [present[:, j] & (table[:, j] < 0) for j in range(count)]
    zero = ops.zeros_like(step)
    # Positive values upward from 1, then back down from qmax; negative ones mirrored.
    last = zero
    for j in range(count):
        levels[j] = ops.where(positive[j], ops.maximum(levels[j], last + 1), levels[j])
        last = ops.where(positive[j], levels[j], last)
    last = zero + qmax + 1
    for j in reversed(range(count)):
        levels[j] = ops.where(positive[j], ops.clip(ops.minimum(levels[j], last - 1), 1.0, qmax), levels[j])
        last = ops.where(positive[j], levels[j], last)
    last = zero
    for j in reversed(range(count)):
        levels[j] = ops.where(negative[j], ops.minimum(levels[j], last - 1), levels[j])
        last = ops.where(negative[j], levels[j], last)
    last = zero - qmax - 1
    for j in range(count):
        levels[j] = ops.where(negative[j], ops.clip(ops.maximum(levels[j], last + 1), -qmax, -1.0), levels[j])
        last = ops.where(negative[j], levels[j], last)
    values = ops.stack(levels, axis=-1) * ops.expand_dims(step, -1)  # (channels, k)
    return ops.reshape(ops.sum(chosen * values, axis=-1), kernel.shape)
