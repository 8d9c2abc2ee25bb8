"""Mask computation: which weights to keep, by magnitude or in an N:M pattern.

Pure functions of a weight tensor written with `keras.ops`, so they run inside a
traced training step on any backend.
"""

from __future__ import annotations

from keras import ops


def magnitude_mask(weights, sparsity):
    """Returns a 0/1 mask that zeroes the `round(sparsity * size)` smallest-magnitude weights."""
    magnitudes = ops.abs(weights)
    flat = ops.reshape(magnitudes, (-1,))
    size = flat.shape[0]
    n_pruned = ops.cast(ops.round(ops.cast(sparsity, "float32") * size), "int32")
    # The n-th smallest magnitude is the threshold: it and everything below it go.
    threshold = ops.take(ops.sort(flat), ops.maximum(n_pruned - 1, 0))
    keep = ops.logical_or(ops.greater(magnitudes, threshold), ops.equal(n_pruned, 0))
    return ops.cast(keep, weights.dtype)


def n_by_m_mask(weights, n: int, m: int, axis: int):
    """Returns a 0/1 mask keeping the `n` largest of every `m` consecutive weights along `axis`.

    This is the 2:4 pattern of sparse tensor cores, along the input-channel axis.
    Exactly `n` weights per group are kept (ties broken by position).
    """
    moved = ops.moveaxis(ops.abs(weights), axis, -1)
    moved_shape = moved.shape
    groups = ops.reshape(moved, (-1, moved_shape[-1] // m, m))
    order = ops.argsort(-groups, axis=-1)
    rank = ops.argsort(order, axis=-1)
    keep = ops.cast(ops.less(rank, n), weights.dtype)
    return ops.moveaxis(ops.reshape(keep, moved_shape), -1, axis)
