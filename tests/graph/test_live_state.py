"""Rebuilds keep the state `set_weights` misses: an adapted Normalization's mean and variance,
a lookup layer's vocabulary (issue 20, item 10: `prune` silently switched normalization off)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kstruct
import tflite_export
from kstruct import _graph
from kstruct.pruning import ConstantSparsity
from tests.console import kstruct as kstruct_cli

RNG = np.random.default_rng(0)
X = RNG.normal(3.0, 2.0, (32, 8, 8, 3)).astype("float32")  # far from zero mean, unit variance
Y = RNG.integers(0, 4, 32)


def normalized_cnn() -> keras.Model:
    """Normalization (adapted) -> Conv -> a removable residual block -> Dense."""
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(X)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(norm(inputs))
    block = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block")(h)
    h = keras.layers.Add(name="add")([h, block])
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def model():
    return normalized_cnn()


def _norm_of(model: keras.Model) -> keras.layers.Normalization:
    layers = [getattr(layer, "layer", layer) for layer in _graph.leaf_layers(model)]  # QAT wraps it
    found = [layer for layer in layers if isinstance(layer, keras.layers.Normalization)]
    assert len(found) == 1, [layer.name for layer in _graph.leaf_layers(model)]
    return found[0]


def _assert_normalizes(model: keras.Model, original: keras.Model) -> None:
    expected = np.asarray(_norm_of(original)(X))
    assert abs(float(expected.mean())) < 0.1  # the original normalizes: inputs have mean 3
    np.testing.assert_allclose(np.asarray(_norm_of(model)(X)), expected, atol=1e-5)


def _unchanged_weights(model):
    return kstruct.pruning.strip(kstruct.pruning.prune(model, ConstantSparsity(0.5)), check_updated=False)


def _unchanged_channels(model):
    return kstruct.pruning.strip(kstruct.pruning.prune_channels(model, 0.5), check_updated=False)


@pytest.mark.parametrize(
    "make",
    [_graph.rebuild, _unchanged_weights, _unchanged_channels],
    ids=["rebuild", "prune_then_strip", "prune_channels_then_strip"],
)
def test_a_rebuild_before_any_training_predicts_what_the_original_predicts(model, make):
    rebuilt = make(model)
    _assert_normalizes(rebuilt, model)
    np.testing.assert_allclose(rebuilt.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "strategy, target",
    [
        ("prune(0.5)", "float32"),
        ("prune_channels(0.5)", "float32"),
        ("drop_blocks(1)", "float32"),
        ("cluster(8)", "float32"),
        ("distill", "float32"),
        ("prune(0.5) + qat", "int8"),
    ],
)
def test_every_rebuilding_step_keeps_an_adapted_normalization(model, strategy, target, tmp_path):
    result = kstruct.optimize(model, strategy, train_data=(X, Y), epochs=1, batch_size=16, target=target)
    if target == "float32":
        _assert_normalizes(result.model, model)
    folder = result.save(tmp_path / "out")
    if target == "float32":  # the two files of one save() compute the same thing
        _assert_normalizes(_agree(folder), model)


def _agree(folder) -> None:
    loaded = keras.models.load_model(folder / "model.keras")
    keras_out, lite_out = next(iter(tflite_export.paired_outputs(folder / "model.tflite", loaded, X).values()))
    np.testing.assert_allclose(lite_out, keras_out, atol=1e-5)
    return loaded


def test_kstruct_optimize_on_a_saved_model_keeps_its_normalization(model, tmp_path):
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    done = kstruct_cli("optimize", "m.keras", "--strategy", "prune(0.5)", "--data", "d.npz", "--target", "float32",
                       "--epochs", "1", "--batch-size", "8", "--out", "o", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _assert_normalizes(_agree(tmp_path / "o"), model)


def test_a_rebuilt_string_lookup_keeps_its_adapted_vocabulary():
    lookup = keras.layers.StringLookup(name="lookup")
    lookup.adapt(np.array([["b"], ["a"], ["b"], ["c"], ["b"], ["a"]]))
    inputs = keras.Input((1,), dtype="string")
    model = keras.Model(inputs, keras.layers.Identity(name="same")(lookup(inputs)))
    words = np.array([["a"], ["b"], ["c"], ["z"]])
    rebuilt = _graph.rebuild(model)
    assert rebuilt.get_layer("lookup").get_vocabulary() == ["[UNK]", "b", "a", "c"]
    np.testing.assert_array_equal(np.asarray(rebuilt(words)), np.asarray(model(words)))
