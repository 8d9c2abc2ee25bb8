"""Raw-op graphs (MobileNetV3's hard-swish) through the doors users use: prune, strip, optimize, quantize."""

import keras
import numpy as np
import pytest

import kstruct
from kstruct.pruning import ConstantSparsity, PruneWrapper
from kstruct.quantization.plan import plan_model
from tests.graph.zoo import mobilenet_v3_small, raw_ops, sample


@pytest.fixture(scope="module")
def mnv3():
    model = mobilenet_v3_small()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _raw_ops(model):
    return sorted(type(op).__name__ for op in model.operations if not isinstance(op, keras.layers.Layer))


@pytest.mark.slow
def test_prune_mobilenet_v3_trains_a_batch_and_strips_to_plain_keras(mnv3):
    before = [w.copy() for w in mnv3.get_weights()]
    x = sample(mnv3, n=8)
    y = np.arange(8) % 10
    pruned = kstruct.pruning.prune(mnv3, ConstantSparsity(0.5, begin_step=0, frequency=1))
    wrapped = [layer for layer in pruned.layers if isinstance(layer, PruneWrapper)]
    convs = [layer.name for layer in mnv3.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    assert sorted(w.layer.name for w in wrapped) == sorted(convs)
    # Eager: tracing fifty wrappers into a graph costs minutes for a single batch.
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert all(int(w.mask_updates.numpy()) == 1 for w in wrapped)

    stripped = kstruct.pruning.strip(pruned)
    assert not any(isinstance(layer, PruneWrapper) for layer in stripped.layers)
    assert _raw_ops(stripped) == _raw_ops(mnv3) == ["Add"] * 9 + ["Multiply"] * 9
    assert kstruct.pruning.sparsity(stripped).overall == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(np.asarray(stripped(x)), np.asarray(pruned(x)), atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, mnv3.get_weights()))


def test_prune_and_strip_a_graph_of_raw_ops_keep_the_ops_and_the_outputs():
    model = raw_ops()
    x = sample(model, n=4)
    pruned = kstruct.pruning.prune(model, ConstantSparsity(0.5, begin_step=0, frequency=1))
    pruned.compile(optimizer="sgd", loss="mse")
    pruned.fit(x, np.zeros((4, 3)), epochs=1, batch_size=4, verbose=0)
    stripped = kstruct.pruning.strip(pruned)
    assert _raw_ops(stripped) == _raw_ops(model) == ["Add", "Add", "Multiply"]
    assert kstruct.pruning.sparsity(stripped).overall == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(np.asarray(stripped(x)), np.asarray(pruned(x)), atol=1e-5)


def test_quantization_plan_represents_raw_ops_as_float_nodes():
    model = raw_ops()
    plans = plan_model(model)
    raw = {op.name for op in model.operations if not isinstance(op, keras.layers.Layer)}
    assert len(raw) == 3
    assert {name: (plans[name].kind, plans[name].reason) for name in raw} == {
        name: ("float", "a Keras op in the graph, not a layer") for name in raw
    }
    assert plans["conv_a"].kind == "weighted" and plans["out"].kind == "weighted"


def test_quantize_runs_a_raw_op_graph_close_to_float():
    model = raw_ops()
    x = sample(model, n=16)
    qat = kstruct.quantization.quantize(model)
    qat(x, training=True)  # the ranges see data once
    expected = np.asarray(model(x))
    got = np.asarray(qat(x, training=False))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_search_space_ties_the_channels_raw_ops_merge_and_builds_narrower():
    import keras_tuner

    model = raw_ops()
    model.compile(optimizer="adam", loss="mse")
    space = kstruct.search.space(model, widths=(0.5, 1.0), depth=False, activations=False)
    assert [(c.layers, c.channels) for c in space.widths] == [(["conv_a", "conv_b", "conv_c"], 4)]
    hp = keras_tuner.HyperParameters()
    space.declare_hyperparameters(hp)
    hp.values["width/conv_a"] = 0.5
    narrow = space.build(hp)
    assert [narrow.get_layer(n).filters for n in ("conv_a", "conv_b", "conv_c")] == [2, 2, 2]
    assert narrow.get_layer("out").kernel.shape == (2, 3)
    assert _raw_ops(narrow) == _raw_ops(model)
    assert np.asarray(narrow(sample(narrow))).shape == (2, 3)


def test_search_space_narrows_through_a_depthwise_multiplier():
    import keras_tuner

    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 1, name="a")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(3, 1, name="b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    model.compile(optimizer="adam", loss="mse")
    model.get_layer("bn").set_weights([np.arange(8.0) + k for k in (1, 2, 3, 4)])
    space = kstruct.search.space(model, widths=(0.5, 1.0), depth=False, activations=False)
    assert [c.layers for c in space.widths] == [["a"], ["b"]]
    hp = keras_tuner.HyperParameters()
    space.declare_hyperparameters(hp)
    full = space.build(hp)
    x = sample(model)
    assert np.abs(np.asarray(full(x)) - np.asarray(model(x))).max() == 0.0
    hp.values["width/a"] = 0.5
    narrow = space.build(hp)
    kept = np.sort(np.argsort(-np.abs(model.get_layer("a").kernel.numpy()).reshape(-1, 4).sum(0), kind="stable")[:2])
    positions = (kept[:, None] * 2 + np.arange(2)).reshape(-1)
    assert narrow.get_layer("dw").kernel.shape == (3, 3, 2, 2)
    np.testing.assert_array_equal(narrow.get_layer("bn").gamma.numpy(), model.get_layer("bn").gamma.numpy()[positions])
    np.testing.assert_array_equal(
        narrow.get_layer("b").kernel.numpy(), model.get_layer("b").kernel.numpy()[:, :, positions, :]
    )
