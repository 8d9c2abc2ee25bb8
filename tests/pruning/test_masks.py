import numpy as np
import pytest
from keras import ops

from kstruct.pruning.masks import magnitude_mask, n_by_m_mask


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_magnitude_mask_zeroes_exactly_the_smallest_weights(sparsity, rng):
    weights = rng.normal(size=(16, 24)).astype("float32")
    mask = ops.convert_to_numpy(magnitude_mask(ops.convert_to_tensor(weights), sparsity))
    n_pruned = int(round(sparsity * weights.size))
    assert int((mask == 0).sum()) == n_pruned
    if 0 < n_pruned < weights.size:
        assert np.abs(weights[mask == 0]).max() < np.abs(weights[mask == 1]).min()


@pytest.mark.parametrize("shape, axis", [((8, 6), 0), ((3, 3, 8, 5), -2), ((3, 3, 5, 8), -1)])
def test_two_by_four_mask_keeps_the_two_largest_of_every_four_input_channels(shape, axis, rng):
    weights = rng.normal(size=shape).astype("float32")
    mask = ops.convert_to_numpy(n_by_m_mask(ops.convert_to_tensor(weights), 2, 4, axis=axis))
    moved_w = np.moveaxis(np.abs(weights), axis, -1).reshape(-1, 4)
    moved_m = np.moveaxis(mask, axis, -1).reshape(-1, 4)
    assert np.all(moved_m.sum(axis=1) == 2)
    kept_min = np.where(moved_m == 1, moved_w, np.inf).min(axis=1)
    dropped_max = np.where(moved_m == 0, moved_w, -np.inf).max(axis=1)
    assert np.all(kept_min >= dropped_max)


def test_n_by_m_mask_keeps_exactly_n_even_when_a_group_is_all_zero():
    weights = np.zeros((8, 2), "float32")
    mask = ops.convert_to_numpy(n_by_m_mask(ops.convert_to_tensor(weights), 1, 4, axis=0))
    assert mask.sum() == 4  # 2 groups x 2 columns, one kept each
