"""Nearest-centroid assignment and centroid lookup, per tensor or per output channel.

Written with `keras.ops` so that assignments are recomputed inside the traced
training step on any backend (TensorFlow, JAX).
"""

from __future__ import annotations

from keras import ops

_FAR = 3.0e38  # distance to a pinned-off centroid: never the nearest


def nearest(weight, centroids, rates, open_slots, sparsity_mask, channel_axis: int | None):
    """Index of the cheapest open centroid for every weight; pruned weights (mask 0) get slot 0, the zero.

    A weight's cost to join centroid `c` is `(w - c)**2 + rates[c]` (all rates 0: the
    nearest). `centroids`, `rates` and `open_slots` are `(k,)` per tensor, `(channels, k)`
    per channel.
    """
    moved = weight if channel_axis is None else ops.moveaxis(weight, channel_axis, -1)
    cost = ops.square(ops.expand_dims(moved, -1) - centroids) + rates
    distance = ops.where(open_slots > 0, cost, _FAR)
    index = ops.cast(ops.argmin(distance, axis=-1), "int32")
    if channel_axis is not None:
        index = ops.moveaxis(index, -1, channel_axis)
    if sparsity_mask is not None:
        index = ops.where(sparsity_mask > 0, index, ops.zeros_like(index))
    return index


def lookup(centroids, index, channel_axis: int | None):
    """The centroid each weight is assigned to; differentiable with respect to `centroids`."""
    if channel_axis is None:
        return ops.take(centroids, index)
    moved = ops.moveaxis(index, channel_axis, -1)
    one_hot = ops.one_hot(moved, centroids.shape[-1], dtype=centroids.dtype)
    return ops.moveaxis(ops.sum(one_hot * centroids, axis=-1), -1, channel_axis)
