"""Nearest-centroid assignment and centroid lookup, per tensor or per output channel.

Written with `keras.ops` so that assignments are recomputed inside the traced
training step on any backend (TensorFlow, JAX, PyTorch).

Memory: a kernel's costs against all `k` centroids form an `(n, k)` tensor, `k` times
the kernel (205 MB in float32 for a 50,000 x 64 Embedding and 16 clusters), and each
elementwise op on it makes another. Above `BLOCK_ELEMENTS` costs, `nearest` compares
the centroids one at a time in a loop, keeping a running minimum, so that no
intermediate is larger than the kernel. A loop op whose iterations wait for each
other, not a Python loop: in a traced TensorFlow step, unrolled comparisons do not
depend on each other and the executor runs them side by side, which holds all `k`
cost tensors at once again. (TensorFlow's CPU allocator keeps the memory of its peak
for the rest of the process, so a transient peak costs for good.)
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

_FAR = 3.0e38  # distance to a pinned-off centroid: never the nearest
# Up to this many (weight, centroid) costs (16 MB in float32), all at once: one argmin.
BLOCK_ELEMENTS = 1 << 22


def _cost(moved, centroids, rates, open_slots):
    """`(w - c)**2 + rate`, or `_FAR` for a closed slot; broadcast between weights and centroids."""
    return ops.where(open_slots > 0, ops.square(moved - centroids) + rates, _FAR)


def _nearest_in_turn(moved, centroids, rates, open_slots):
    """The argmin over the last axis of the costs, computed one centroid at a time (same result, same ties)."""
    k = int(centroids.shape[-1])

    def cost_of(i):
        return _cost(moved, *(ops.take(a, i, axis=-1) for a in (centroids, rates, open_slots)))

    def compare(i, best, index):
        cost = cost_of(i)
        better = ops.less(cost, best)  # strictly: a tie keeps the lower index, as argmin does
        best = ops.where(better, cost, best)
        index = ops.where(better, ops.cast(i, "int32"), index)
        # Always 0 (nothing is below -inf), but the next centroid waits for this comparison:
        # TensorFlow's while loop otherwise runs up to 10 iterations side by side, each
        # with cost tensors the size of the kernel (+140 MB on a 50,000 x 64 Embedding).
        wait = ops.cast(ops.less(ops.reshape(best, (-1,))[0], float("-inf")), "int32")
        return i + 1 + wait, best, index

    first = cost_of(0)
    state = (ops.convert_to_tensor(1, "int32"), first, ops.zeros(ops.shape(first), "int32"))
    _, _, index = ops.while_loop(lambda i, best, index: ops.less(i, k), compare, state)
    return index


def nearest(weight, centroids, rates, open_slots, sparsity_mask, channel_axis: int | None):
    """Index of the cheapest open centroid for every weight; pruned weights (mask 0) get slot 0, the zero.

    A weight's cost to join centroid `c` is `(w - c)**2 + rates[c]` (all rates 0: the
    nearest); a tie goes to the lower index. `centroids`, `rates` and `open_slots` are
    `(k,)` per tensor, `(channels, k)` per channel. No gradient flows through the
    assignment, so none is recorded (an autograd tape would keep the costs alive).
    """
    weight = ops.stop_gradient(ops.convert_to_tensor(weight))
    centroids, rates, open_slots = (ops.stop_gradient(ops.convert_to_tensor(a)) for a in (centroids, rates, open_slots))
    moved = weight if channel_axis is None else ops.moveaxis(weight, channel_axis, -1)
    if math.prod(int(d) for d in weight.shape) * int(centroids.shape[-1]) <= BLOCK_ELEMENTS:
        index = ops.cast(ops.argmin(_cost(ops.expand_dims(moved, -1), centroids, rates, open_slots), axis=-1), "int32")
    else:
        index = _nearest_in_turn(moved, centroids, rates, open_slots)
    if channel_axis is not None:
        index = ops.moveaxis(index, -1, channel_axis)
    if sparsity_mask is not None:
        index = ops.where(sparsity_mask > 0, index, ops.zeros_like(index))
    return index


def nearest_by_rows(
    weight, centroids, rates, open_slots, sparsity_mask, channel_axis: int | None, elements: int = 1 << 20
):
    """`nearest`, as NumPy, computed eagerly a few rows (first axis) at a time: for use outside a traced step.

    Every row's assignment is independent of the others, so the result is `nearest`'s.
    Slices of up to `elements` costs keep each temporary at 4 MB (`nearest` on a whole
    Embedding of millions of weights in eager mode leaves the allocator holding
    over 100 MB of freed temporaries).
    """
    weight = ops.convert_to_tensor(weight)
    shape = tuple(int(d) for d in weight.shape)
    per_row = math.prod(shape[1:]) * int(centroids.shape[-1])
    rows = max(1, elements // max(per_row, 1))
    if len(shape) < 2 or rows >= shape[0] or (channel_axis is not None and channel_axis % len(shape) == 0):
        return ops.convert_to_numpy(nearest(weight, centroids, rates, open_slots, sparsity_mask, channel_axis))
    mask = None if sparsity_mask is None else ops.convert_to_tensor(sparsity_mask)
    index = np.empty(shape, dtype="int32")
    for start in range(0, shape[0], rows):
        part = slice(start, start + rows)
        index[part] = ops.convert_to_numpy(
            nearest(weight[part], centroids, rates, open_slots, None if mask is None else mask[part], channel_axis)
        )
    return index


def lookup(centroids, index, channel_axis: int | None):
    """The centroid each weight is assigned to; differentiable with respect to `centroids`.

    Per channel, above `BLOCK_ELEMENTS` (weights times centroids), a gather from the
    flattened `(channels, k)` centroids: the one-hot product builds an `(n, k)` tensor,
    and its gradient another. Below, the one-hot product, whose centroid gradients
    sum in the order they always did.
    """
    if channel_axis is None:
        return ops.take(centroids, index)
    channels, k = (int(d) for d in centroids.shape)
    moved = ops.moveaxis(index, channel_axis, -1)
    if math.prod(int(d) for d in index.shape) * k <= BLOCK_ELEMENTS:
        one_hot = ops.one_hot(moved, k, dtype=centroids.dtype)
        return ops.moveaxis(ops.sum(one_hot * centroids, axis=-1), -1, channel_axis)
    flat_index = moved + ops.cast(ops.arange(channels) * k, moved.dtype)
    return ops.moveaxis(ops.take(ops.reshape(centroids, (-1,)), flat_index), -1, channel_axis)
