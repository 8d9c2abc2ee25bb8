"""kstruct's wrappers train with a plain `fit` on JAX and PyTorch, and what they learned survives save and load."""

import keras
import numpy as np
import pytest

from kstruct.pruning import ConstantSparsity, PruneWrapper, prune, sparsity, strip
from kstruct.quantization import FakeQuant, quantize
from tests.conftest import compiled, tiny_cnn
from tests.backends.conftest import BACKEND, off_tensorflow

pytestmark = [pytest.mark.backends, off_tensorflow]


def test_prune_fit_strip_reaches_the_target_sparsity_off_tensorflow(small_mnist):
    (x, y), _ = small_mnist
    model = compiled(tiny_cnn())
    wrapped = compiled(prune(model, ConstantSparsity(0.6, begin_step=0, frequency=1)))
    wrapped.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    # The schedule advanced and the masks were recomputed inside the backend's (compiled, on JAX) train step: once per batch.
    wrappers = [layer for layer in wrapped.layers if isinstance(layer, PruneWrapper)]
    assert wrappers and all(int(keras.ops.convert_to_numpy(w.pruning_step)) == 8 for w in wrappers)
    for w in wrappers:
        mask = keras.ops.convert_to_numpy(w.mask)
        assert 1 - mask.mean() == pytest.approx(0.6, abs=0.01)
    stripped = strip(wrapped)
    assert [type(layer).__name__ for layer in stripped.layers] == [type(layer).__name__ for layer in model.layers]
    assert sparsity(stripped).overall == pytest.approx(0.6, abs=0.01)
    assert sparsity(model).overall == 0.0  # the user's model is untouched
    np.testing.assert_allclose(stripped.predict(x[:8], verbose=0), wrapped.predict(x[:8], verbose=0), atol=1e-6)


def test_two_of_four_sparsity_holds_in_every_group_after_training_off_tensorflow(small_mnist):
    (x, y), _ = small_mnist
    wrapped = compiled(prune(compiled(tiny_cnn()), m_by_n=(2, 4), layers=["hidden", "out"]))
    wrapped.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    kernel = keras.ops.convert_to_numpy(strip(wrapped).get_layer("hidden").kernel)
    groups = (kernel != 0).reshape(-1, 4, kernel.shape[1]).sum(axis=1)  # 4 consecutive input channels per output
    assert groups.max() == 2 and groups.min() == 2


def test_pruned_model_saved_mid_training_off_tensorflow_resumes_with_its_masks(small_mnist, tmp_path):
    (x, y), (xt, _) = small_mnist
    wrapped = compiled(prune(compiled(tiny_cnn()), ConstantSparsity(0.6, begin_step=0, frequency=1)))
    wrapped.fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    wrapped.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    assert [type(layer).__name__ for layer in loaded.layers].count("PruneWrapper") == 3
    np.testing.assert_array_equal(loaded.predict(xt[:32], verbose=0), wrapped.predict(xt[:32], verbose=0))
    resumed = next(layer for layer in loaded.layers if isinstance(layer, PruneWrapper))
    assert int(keras.ops.convert_to_numpy(resumed.pruning_step)) == 4  # the step counter was saved
    compiled(loaded).fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    assert int(keras.ops.convert_to_numpy(resumed.pruning_step)) == 8
    assert sparsity(strip(loaded)).overall == pytest.approx(0.6, abs=0.01)


def test_qat_model_trained_off_tensorflow_saves_and_loads_with_its_ranges(small_mnist, tmp_path):
    (x, y), (xt, _) = small_mnist
    qat = compiled(quantize(compiled(tiny_cnn())))
    quantizer = next(layer for layer in qat.layers if isinstance(layer, FakeQuant))
    before = quantizer.quantization_params()
    qat.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    scale, zero_point = quantizer.quantization_params()
    assert (scale, zero_point) != before  # the input range was learned in the backend's train step

    qat.save(tmp_path / "qat.keras")
    loaded = keras.models.load_model(tmp_path / "qat.keras")
    loaded_quantizer = next(layer for layer in loaded.layers if isinstance(layer, FakeQuant))
    assert loaded_quantizer.quantization_params() == (scale, zero_point)
    np.testing.assert_array_equal(loaded.predict(xt[:32], verbose=0), qat.predict(xt[:32], verbose=0))


def test_per_channel_clustering_trains_its_centroids_off_tensorflow():
    from kstruct import clustering

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="h"),
                              keras.layers.Dense(3, name="o")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clustered = clustering.cluster(model, 4, per_channel=True)
    start = np.array(clustered.get_layer("clustered_h").centroids_of("kernel"))
    rng = np.random.default_rng(0)
    clustered.fit(rng.random((64, 8), np.float32), rng.integers(0, 3, 64), epochs=2, verbose=0)
    assert not np.allclose(clustered.get_layer("clustered_h").centroids_of("kernel"), start)
    assert clustering.distinct_values(clustering.strip(clustered), per_channel=True) == {"h": 4, "o": 4}
