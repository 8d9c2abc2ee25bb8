"""kstruct's wrappers train with a plain `fit` on JAX, and what they learned survives save and load."""

import keras
import numpy as np
import pytest

from kstruct.pruning import ConstantSparsity, prune, sparsity, strip
from kstruct.quantization import FakeQuant, quantize
from tests.conftest import compiled, tiny_cnn
from tests.jax.conftest import requires_jax

pytestmark = [pytest.mark.jax, requires_jax]


def test_prune_fit_strip_reaches_the_target_sparsity_on_jax(small_mnist):
    (x, y), _ = small_mnist
    model = compiled(tiny_cnn())
    wrapped = compiled(prune(model, ConstantSparsity(0.6, begin_step=0, frequency=1)))
    wrapped.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    stripped = strip(wrapped)
    assert [type(layer).__name__ for layer in stripped.layers] == [type(layer).__name__ for layer in model.layers]
    report = sparsity(stripped)
    assert report.overall == pytest.approx(0.6, abs=0.01)
    assert sparsity(model).overall == 0.0  # the user's model is untouched
    # The masks were applied by JAX's jit-compiled train step, not after it: the pruned model predicts.
    assert np.isfinite(stripped.predict(x[:8], verbose=0)).all()


def test_two_of_four_sparsity_holds_in_every_group_after_training_on_jax(small_mnist):
    (x, y), _ = small_mnist
    wrapped = compiled(prune(compiled(tiny_cnn()), m_by_n=(2, 4), layers=["hidden", "out"]))
    wrapped.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    kernel = strip(wrapped).get_layer("hidden").kernel.numpy()
    groups = (kernel != 0).reshape(-1, 4, kernel.shape[1]).sum(axis=1)  # 4 consecutive input channels per output
    assert groups.max() == 2 and groups.min() == 2


def test_qat_model_trained_on_jax_saves_and_loads_with_its_ranges(small_mnist, tmp_path):
    (x, y), (xt, _) = small_mnist
    qat = compiled(quantize(compiled(tiny_cnn())))
    quantizer = next(layer for layer in qat.layers if isinstance(layer, FakeQuant))
    before = quantizer.quantization_params()
    qat.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    scale, zero_point = quantizer.quantization_params()
    assert (scale, zero_point) != before  # the input range was learned in JAX's train step

    qat.save(tmp_path / "qat.keras")
    loaded = keras.models.load_model(tmp_path / "qat.keras")
    loaded_quantizer = next(layer for layer in loaded.layers if isinstance(layer, FakeQuant))
    assert loaded_quantizer.quantization_params() == (scale, zero_point)
    np.testing.assert_array_equal(loaded.predict(xt[:32], verbose=0), qat.predict(xt[:32], verbose=0))
