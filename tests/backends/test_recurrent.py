"""A sequence tagger (Embedding -> Bidirectional(LSTM) -> TimeDistributed(Dense)) is pruned on JAX and PyTorch:
the masks act inside the recurrence in the backend's own training step, save and load, and convert."""

import keras
import numpy as np
import pytest

import kstruct
from kstruct.pruning import ConstantSparsity, PruneWrapper, prune, sparsity, strip
from tests.backends.conftest import BACKEND, off_tensorflow
from tests.pruning.test_recurrent import STEPS, TAGS, VOCAB, tagger

pytestmark = [pytest.mark.backends, off_tensorflow]


@pytest.fixture(scope="module")
def sentences():
    rng = np.random.default_rng(3)
    return rng.integers(1, VOCAB, (32, STEPS)), rng.integers(0, TAGS, (32, STEPS))


def test_a_tagger_is_pruned_through_optimize_off_tensorflow_and_its_file_matches(sentences):
    x, y = sentences
    result = kstruct.optimize(tagger(), "prune(0.5)", train_data=(x, y), epochs=1, batch_size=8,
                              target="float32", verbose=0)
    original, pruned = result.report.stages
    assert pruned.backend == BACKEND
    assert (pruned.sparsity, pruned.prunable_params, pruned.prunable_layers) == (0.5, 424, 2)
    assert [type(layer).__name__ for layer in result.model.layers] == ["Embedding", "Bidirectional", "TimeDistributed"]
    # Every kernel and recurrent kernel, of both directions, is half zeros.
    encoder = result.model.get_layer("encoder")
    for cell in (encoder.forward_layer.cell, encoder.backward_layer.cell):
        for kernel in (cell.kernel, cell.recurrent_kernel):
            value = keras.ops.convert_to_numpy(kernel)
            assert np.sum(value == 0) == value.size // 2, kernel.path
    assert pruned.max_abs_diff < 1e-5  # the float32 file (converted in the TensorFlow child) computes the same


def test_a_pruned_tagger_trains_saves_and_loads_with_its_masks_off_tensorflow(sentences, tmp_path):
    x, y = sentences
    wrapped = prune(tagger(mask_zero=True), ConstantSparsity(0.5, begin_step=0, frequency=1))
    wrapped.compile("adam", "sparse_categorical_crossentropy")
    wrapped.fit(x, y, epochs=1, batch_size=16, verbose=0)
    encoder = wrapped.get_layer("pruned_encoder")
    assert int(keras.ops.convert_to_numpy(encoder.pruning_step)) == 2
    for mask in encoder.masks:
        assert keras.ops.convert_to_numpy(mask).mean() == 0.5
    wrapped.save(tmp_path / "tagger.keras")
    loaded = keras.models.load_model(tmp_path / "tagger.keras")
    assert [type(layer).__name__ for layer in loaded.layers] == ["Embedding", "PruneWrapper", "PruneWrapper"]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), wrapped.predict(x, verbose=0))
    stripped = strip(loaded)
    assert isinstance(stripped.get_layer("encoder"), keras.layers.Bidirectional)
    assert not any(isinstance(layer, PruneWrapper) for layer in stripped.layers)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), wrapped.predict(x, verbose=0), atol=1e-6)
    assert sparsity(stripped).overall == 0.5
