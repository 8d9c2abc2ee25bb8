"""`kstruct.clustering.assign`: the memory-lean paths (one centroid at a time, a few rows at a time,
the per-channel gather) give the plain argmin's indices and the one-hot lookup's values, ties included."""

import keras
import numpy as np
import pytest
from keras import ops

from kstruct import clustering
from kstruct.clustering import assign


def _plain_nearest(weight, centroids, rates, open_slots, mask, axis):
    """The reference: every cost at once, as (n, k), then argmin (the first on a tie)."""
    moved = weight if axis is None else np.moveaxis(weight, axis, -1)
    cost = np.where(open_slots > 0, np.square(moved[..., None] - centroids) + rates, np.float32(3.0e38))
    index = cost.argmin(-1).astype("int32")
    index = index if axis is None else np.moveaxis(index, -1, axis)
    return index if mask is None else np.where(mask > 0, index, 0)


def _case(rng, shape, k, axis):
    weight = rng.normal(size=shape).astype("float32")
    weight[rng.random(shape) < 0.2] = 0.0
    per = (k,) if axis is None else (shape[axis], k)
    centroids = np.sort(rng.normal(size=per).astype("float32"), axis=-1)
    centroids[..., 3] = centroids[..., 2]  # a tie: the lower index must win
    weight.reshape(-1)[:5] = centroids.reshape(-1)[2]  # weights exactly on the tied centroid
    rates = (rng.random(per) * 0.1).astype("float32")
    open_slots = (rng.random(per) > 0.2).astype("float32")
    open_slots[..., 1] = 1.0
    return weight, centroids * open_slots, rates, open_slots, (weight != 0).astype("float32")


@pytest.mark.parametrize(
    "shape, k, axis", [((300, 24), 8, None), ((300, 24), 8, 1), ((5, 5, 6, 12), 7, 3), ((6, 5, 12, 4), 5, 2)]
)
def test_nearest_one_centroid_at_a_time_is_the_argmin(monkeypatch, shape, k, axis):
    weight, centroids, rates, open_slots, mask = _case(np.random.default_rng(0), shape, k, axis)
    expected = _plain_nearest(weight, centroids, rates, open_slots, mask, axis)
    whole = ops.convert_to_numpy(assign.nearest(weight, centroids, rates, open_slots, mask, axis))
    monkeypatch.setattr(assign, "BLOCK_ELEMENTS", 16)  # every kernel above it: the loop
    in_turn = ops.convert_to_numpy(assign.nearest(weight, centroids, rates, open_slots, mask, axis))
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(in_turn, expected)
    assert in_turn.dtype == np.int32


@pytest.mark.parametrize(
    "shape, k, axis", [((300, 24), 8, None), ((300, 24), 8, 1), ((7, 5, 6, 12), 7, 2), ((9, 40), 4, 0)]
)
@pytest.mark.parametrize("elements", [1, 500, 1 << 20])
def test_nearest_by_rows_is_nearest(shape, k, axis, elements):
    weight, centroids, rates, open_slots, mask = _case(np.random.default_rng(1), shape, k, axis)
    expected = _plain_nearest(weight, centroids, rates, open_slots, mask, axis)
    unmasked = _plain_nearest(weight, centroids, rates, open_slots, None, axis)
    for sparsity_mask, want in ((keras.Variable(mask), expected), (None, unmasked)):
        rows = assign.nearest_by_rows(
            keras.Variable(weight), centroids, rates, open_slots, sparsity_mask, axis, elements
        )
        assert isinstance(rows, np.ndarray) and rows.dtype == np.int32
        np.testing.assert_array_equal(rows, want)


@pytest.mark.parametrize("axis", [1, 2])
def test_lookup_gather_is_the_one_hot_product(monkeypatch, axis):
    rng = np.random.default_rng(2)
    shape = (6, 5, 4)
    centroids = rng.normal(size=(shape[axis], 3)).astype("float32")
    index = rng.integers(0, 3, size=shape).astype("int32")
    expected = np.moveaxis(centroids[np.arange(shape[axis]), np.moveaxis(index, axis, -1)], -1, axis)
    one_hot = ops.convert_to_numpy(assign.lookup(centroids, index, axis))
    monkeypatch.setattr(assign, "BLOCK_ELEMENTS", 1)
    gathered = ops.convert_to_numpy(assign.lookup(centroids, index, axis))
    np.testing.assert_array_equal(one_hot, expected)
    np.testing.assert_array_equal(gathered, expected)


@pytest.mark.parametrize("per_channel", [False, True])
def test_training_on_the_lean_path_matches_the_plain_one(monkeypatch, per_channel):
    """A kernel above BLOCK_ELEMENTS trains to the same assignments (per tensor: the same weights, bit for bit)."""

    def train():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(200, 8, name="embedding"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ])
        rng = np.random.default_rng(0)
        x = rng.integers(0, 200, (96, 6))
        clustered = clustering.cluster(model, 5, per_channel=per_channel)
        clustered.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        clustered.fit(x, x[:, 0] % 3, epochs=1, batch_size=32, verbose=0)
        wrapper = next(layer for layer in clustered.layers if isinstance(layer, clustering.ClusterWrapper))
        return wrapper.assignments_of("embeddings"), clustering.strip(clustered).get_weights()

    plain_index, plain_weights = train()
    monkeypatch.setattr(assign, "BLOCK_ELEMENTS", 64)
    lean_index, lean_weights = train()
    np.testing.assert_array_equal(lean_index, plain_index)
    for lean, plain in zip(lean_weights, plain_weights):
        if per_channel:  # the gather sums the centroids' gradients in another order
            np.testing.assert_allclose(lean, plain, rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(lean, plain)
