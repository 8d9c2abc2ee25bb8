import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kstruct import UnsupportedModelError
from kstruct.pruning import ConstantSparsity, PolynomialDecay, PruneWrapper, prune, sparsity, strip
from tests.conftest import compiled, tiny_cnn


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_prune_wraps_prunable_layers_and_never_modifies_the_input(small_mnist):
    model = compiled(tiny_cnn())
    before = _weights(model)
    pruned = prune(model, ConstantSparsity(0.5, frequency=1))
    assert [type(layer).__name__ for layer in pruned.layers] == [
        "PruneWrapper", "MaxPooling2D", "Flatten", "PruneWrapper", "PruneWrapper",
    ]
    (x, y), _ = small_mnist
    pruned.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert not any(isinstance(layer, PruneWrapper) for layer in model.layers)


def test_fit_reaches_the_target_sparsity_without_a_callback(small_mnist):
    (x, y), _ = small_mnist
    pruned = prune(compiled(tiny_cnn()), PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=5))
    pruned.fit(x, y, epochs=1, batch_size=32, verbose=0)  # 25 steps
    report = sparsity(pruned)
    assert report.overall == pytest.approx(0.8, abs=0.005)
    for layer in report.layers:
        assert layer.sparsity == pytest.approx(0.8, abs=0.01), layer.name
    assert int(pruned.layers[0].pruning_step.numpy()) == 25


def test_schedule_counts_every_step_when_one_call_runs_several(small_mnist):
    """compile(steps_per_execution=5): the schedule lives in the layer, so no step goes uncounted."""
    (x, y), _ = small_mnist
    pruned = prune(tiny_cnn(), PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=5))
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=5)
    pruned.fit(x, y, epochs=1, batch_size=32, verbose=0)  # 25 steps in 5 calls
    assert int(pruned.layers[0].pruning_step.numpy()) == 25
    assert int(pruned.layers[0].mask_updates.numpy()) == 5  # steps 0, 5, 10, 15, 20
    assert sparsity(pruned).overall == pytest.approx(0.8, abs=0.005)


def test_strip_bakes_the_masks_into_plain_layers_with_identical_predictions(small_mnist):
    (x, y), (xt, _) = small_mnist
    pruned = prune(compiled(tiny_cnn()), ConstantSparsity(0.7, frequency=4))
    pruned.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    stripped = strip(pruned)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert [layer.name for layer in stripped.layers] == ["conv", "pool", "flatten", "hidden", "out"]
    np.testing.assert_allclose(stripped.predict(xt, verbose=0), pruned.predict(xt, verbose=0), atol=1e-6)
    kernel = stripped.get_layer("hidden").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.7, abs=0.005)
    assert sparsity(stripped).overall == pytest.approx(sparsity(pruned).overall)


def test_pruned_weights_neither_shape_the_output_nor_train_nor_regrow(small_mnist):
    # The forward pass sees `kernel * mask`, so a pruned weight gets no gradient and
    # keeps its old value in the variable; masks are ranked on `kernel * mask`, so it
    # stays pruned at later updates. (tfmot zeroes the variable instead; on the
    # qat_vs_tfmot benchmark both ways gave the same accuracy.)
    (x, y), _ = small_mnist
    model = prune(tiny_cnn(), ConstantSparsity(0.5, frequency=2), layers="hidden")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    wrapper = model.get_layer("pruned_hidden")
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)  # step 0 computes the first mask
    first_mask = wrapper.mask.numpy().copy()
    pruned = first_mask == 0
    stale = wrapper.layer.kernel.numpy()[pruned].copy()
    assert pruned.mean() == pytest.approx(0.5, abs=0.001) and np.any(stale != 0)

    features = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(4, 1352)).astype("float32"))
    with tf.GradientTape() as tape:
        outputs = wrapper(features)
        loss = keras.ops.sum(outputs**2)
    gradient = tape.gradient(loss, wrapper.layer.kernel).numpy()
    assert np.all(gradient[pruned] == 0) and np.any(gradient[~pruned] != 0)
    expected = np.maximum(features.numpy() @ (wrapper.layer.kernel.numpy() * first_mask) + wrapper.layer.bias.numpy(), 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), expected, rtol=1e-5, atol=1e-5)

    model.fit(x[32:256], y[32:256], batch_size=32, epochs=1, verbose=0)  # 7 more steps, 3 more mask updates
    assert int(wrapper.mask_updates.numpy()) == 4
    np.testing.assert_array_equal(wrapper.mask.numpy(), first_mask)
    np.testing.assert_array_equal(wrapper.layer.kernel.numpy()[pruned], stale)


def test_a_run_in_which_the_mask_never_updated_is_reported(small_mnist):
    (x, y), _ = small_mnist
    pruned = prune(compiled(tiny_cnn()), ConstantSparsity(0.5, begin_step=100, frequency=100))
    pruned.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    with pytest.warns(UserWarning) as caught:
        stripped = strip(pruned)
    message = str(caught[0].message)
    assert "the pruning mask never updated for 3 layer(s)" in message
    assert "conv (trained 2 steps; schedule begins at step 100, updates every 100)" in message
    assert sparsity(stripped).overall == 0.0


def test_layers_selects_by_name_regex_and_predicate():
    model = tiny_cnn()
    by_name = prune(model, ConstantSparsity(0.5), layers="hidden")
    by_regex = prune(model, ConstantSparsity(0.5), layers=["h.*", "o.t"])
    by_predicate = prune(model, ConstantSparsity(0.5), layers=lambda layer: isinstance(layer, keras.layers.Conv2D))
    wrapped = lambda m: [layer.layer.name for layer in m.layers if isinstance(layer, PruneWrapper)]
    assert wrapped(by_name) == ["hidden"]
    assert wrapped(by_regex) == ["hidden", "out"]
    assert wrapped(by_predicate) == ["conv"]


def test_layers_that_select_nothing_name_the_prunable_layers():
    with pytest.raises(ValueError) as err:
        prune(tiny_cnn(), ConstantSparsity(0.5), layers="pool")
    assert str(err.value) == "`layers` entry 'pool' matches no prunable layer. Prunable layers: conv, hidden, out"
    with pytest.raises(ValueError, match=r"^`layers` entry 'dens.\*' matches no prunable layer"):
        prune(tiny_cnn(), ConstantSparsity(0.5), layers=["conv", "dens.*"])  # one typo in a list is an error too


def test_two_by_four_sparsity_along_input_channels(small_mnist):
    (x, y), _ = small_mnist
    model = compiled(tiny_cnn())
    with pytest.warns(UserWarning, match=r"left dense for 2:4 sparsity.*conv \(1 input channels\)"):
        pruned = prune(model, m_by_n=(2, 4))
    pruned.fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    stripped = strip(pruned)
    for name in ("hidden", "out"):
        kernel = stripped.get_layer(name).kernel.numpy()  # (inputs, units)
        groups = (kernel != 0).reshape(kernel.shape[0] // 4, 4, kernel.shape[1])
        assert groups.sum(axis=1).max() <= 2, name
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)
    assert np.mean(stripped.get_layer("conv").kernel.numpy() == 0) == 0.0


def test_n_by_m_survives_save_and_load(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d")])
    pruned = prune(model, m_by_n=(1, 4))
    pruned.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.layers[0].m_by_n == (1, 4)
    assert loaded.layers[0].schedule == pruned.layers[0].schedule


def test_saved_pruned_model_resumes_with_its_masks_and_step(small_mnist, tmp_path):
    (x, y), (xt, _) = small_mnist
    schedule = PolynomialDecay(0.0, 0.6, begin_step=0, end_step=30, frequency=5)
    pruned = prune(compiled(tiny_cnn()), schedule)
    pruned.fit(x[:320], y[:320], epochs=1, batch_size=32, verbose=0)  # 10 steps
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    assert int(loaded.layers[0].pruning_step.numpy()) == 10
    for a, b in zip(pruned.layers, loaded.layers):
        if isinstance(a, PruneWrapper):
            np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
    np.testing.assert_allclose(loaded.predict(xt, verbose=0), pruned.predict(xt, verbose=0), atol=1e-6)
    loaded.fit(x[:800], y[:800], epochs=1, batch_size=32, verbose=0)  # 25 more: past end_step
    assert int(loaded.layers[0].pruning_step.numpy()) == 35
    assert sparsity(loaded).overall == pytest.approx(0.6, abs=0.005)


def _residual_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    branch = keras.layers.Conv2D(8, 3, padding="same", name="branch_a")(x)
    branch = keras.layers.BatchNormalization(name="bn")(branch)
    side = keras.layers.DepthwiseConv2D(3, padding="same", name="branch_b")(x)
    x = keras.layers.Add(name="add")([x, branch, side])
    x = keras.layers.SeparableConv2D(8, 3, name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="residual")


def test_functional_model_with_branches_and_residuals(rng):
    model = compiled(_residual_model())
    x = rng.normal(size=(32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, size=32)
    pruned = prune(model, ConstantSparsity(0.5, frequency=1))
    wrapped = sorted(layer.layer.name for layer in pruned.layers if isinstance(layer, PruneWrapper))
    assert wrapped == ["branch_a", "branch_b", "head", "sep", "stem"]
    pruned.fit(x, y, epochs=1, batch_size=16, verbose=0)
    stripped = strip(pruned)
    assert type(stripped.get_layer("branch_b")).__name__ == "DepthwiseConv2D"
    assert np.mean(stripped.get_layer("sep").pointwise_kernel.numpy() == 0) == pytest.approx(0.5, abs=0.02)
    assert np.mean(stripped.get_layer("branch_b").kernel.numpy() == 0) == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def test_nested_functional_model_is_pruned_inside(rng):
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="inner_dense")], name="inner")
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(2, name="outer_dense")(inner(inputs))
    model = keras.Model(inputs, outputs)
    pruned = prune(model, ConstantSparsity(0.5, frequency=1))
    nested = pruned.get_layer("inner")
    assert isinstance(nested.layers[0], PruneWrapper)
    stripped = strip(pruned, check_updated=False)
    assert type(stripped.get_layer("inner").layers[0]).__name__ == "Dense"
    x = rng.normal(size=(4, 8)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_subclassed_models_get_a_clear_error():
    model = _Subclassed()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(UnsupportedModelError) as err:
        prune(model, ConstantSparsity(0.5))
    assert "supports Sequential and functional Keras models" in str(err.value)
    assert "Received: a subclassed model of type _Subclassed" in str(err.value)


@pytest.mark.slow
def test_mobilenet_v2_prunes_trains_and_strips(rng):
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=4)
    compiled(model)
    pruned = prune(model, ConstantSparsity(0.5, frequency=1))
    kinds = {type(layer.layer).__name__ for layer in pruned.layers if isinstance(layer, PruneWrapper)}
    assert kinds == {"Conv2D", "DepthwiseConv2D", "Dense"}
    x = rng.uniform(size=(4, 96, 96, 3)).astype("float32")
    pruned.run_eagerly = True  # one step: tracing a 150-layer train function would take 10x longer than the step
    pruned.fit(x, np.arange(4) % 4, epochs=1, batch_size=4, verbose=0)
    stripped = strip(pruned)
    assert sparsity(stripped).overall == pytest.approx(0.5, abs=0.01)
    assert len(stripped.layers) == len(model.layers)
    np.testing.assert_allclose(stripped(x, training=False), pruned(x, training=False), atol=1e-4)


def test_sparsity_looks_inside_other_wrappers():
    dense = keras.layers.Dense(4, name="inner")
    dense.build((None, 8))
    kernel = np.ones((8, 4), "float32")
    kernel[:6] = 0.0
    dense.set_weights([kernel, np.zeros(4, "float32")])

    class Passthrough(keras.layers.Wrapper):
        def call(self, x):
            return self.layer(x)

    model = keras.Sequential([keras.Input((8,)), Passthrough(dense)])
    report = sparsity(model)
    assert [(layer.name, layer.sparsity) for layer in report.layers] == [("inner", 0.75)]
