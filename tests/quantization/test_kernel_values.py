"""`held_values`: which kernels QAT takes as clustered when nothing declares their values."""

import numpy as np

from kstruct.quantization.kernel_values import MAX_HELD_VALUES, held_values


def test_a_trained_float_kernel_holds_too_many_values():
    kernel = np.random.default_rng(0).normal(size=(64, 10)).astype("float32")
    assert held_values(kernel) is None


def test_a_kernel_of_sixteen_shared_values_is_read_per_tensor():
    rng = np.random.default_rng(0)
    values = np.sort(rng.normal(size=16)).astype("float32")
    kernel = rng.choice(values, size=(64, 10))
    held = held_values(kernel)
    assert held["axis"] is None
    np.testing.assert_array_equal(held["values"], np.unique(kernel))


def test_per_channel_values_are_read_per_slice_of_the_last_axis_and_padded():
    rng = np.random.default_rng(0)
    # 12 output channels, 4 values each, different per channel: more than 32 values in the whole kernel.
    channels = [rng.choice(rng.normal(size=4) + 10 * c, size=(3, 3, 8)) for c in range(12)]
    channels[0][...] = 0.0  # a pruned channel: one value
    kernel = np.stack(channels, axis=-1).astype("float32")
    held = held_values(kernel)
    assert held["axis"] == 3
    values = np.asarray(held["values"])
    assert values.shape == (12, 4)
    np.testing.assert_array_equal(values[0], [0.0, 0.0, 0.0, 0.0])
    for c in range(1, 12):
        assert set(values[c]) == set(np.unique(kernel[..., c]))


def test_few_values_shared_by_too_few_weights_or_a_constant_kernel_are_not_taken():
    assert held_values(np.zeros((16, 4), "float32")) is None  # one value: an initializer, not clusters
    small = np.arange(MAX_HELD_VALUES, dtype="float32").reshape(4, -1)  # each value once
    assert held_values(small) is None
