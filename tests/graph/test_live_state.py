"""Rebuilds keep what the user's live model holds beyond its weights and configs (issue 20):

- the state `set_weights` misses: an adapted Normalization's mean and variance, a lookup
  layer's vocabulary (item 10: `prune` silently switched normalization off);
- a Lambda layer's Python function, copied live, while files keep Keras's safe mode (item 4).

One model holds both, so each optimize run checks the two."""

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
LIMIT = 9.0  # a module global the Lambda reads: a config round trip runs the code without these globals


def clip(t):
    return keras.ops.clip(t, -LIMIT, LIMIT)


def user_model(*, with_lambda: bool = True) -> keras.Model:
    """[Lambda (a Python lambda) ->] Normalization (adapted) -> Conv -> a removable residual block -> Dense."""
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(X)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Lambda(lambda t: clip(t), name="clip")(inputs) if with_lambda else inputs
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(norm(h))
    block = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block")(h)
    h = keras.layers.Add(name="add")([h, block])
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def model():
    return user_model()


def _layer_of(model: keras.Model, cls: type) -> keras.layers.Layer:
    layers = [getattr(layer, "layer", layer) for layer in _graph.leaf_layers(model)]  # QAT wraps some
    found = [layer for layer in layers if type(layer) is cls]
    assert len(found) == 1, [layer.name for layer in layers]
    return found[0]


def _assert_normalizes(model: keras.Model, original: keras.Model) -> None:
    expected = np.asarray(_layer_of(original, keras.layers.Normalization)(X))
    assert abs(float(expected.mean())) < 0.1  # the original normalizes: inputs have mean 3
    np.testing.assert_allclose(np.asarray(_layer_of(model, keras.layers.Normalization)(X)), expected, atol=1e-5)


def _assert_runs_the_users_lambda(model: keras.Model, original: keras.Model) -> None:
    assert _layer_of(model, keras.layers.Lambda).function is original.get_layer("clip").function


def _agree(lite, model: keras.Model) -> None:
    """The .tflite computes what the Keras model computes (float32 target)."""
    keras_out, lite_out = next(iter(tflite_export.paired_outputs(lite, model, X).values()))
    np.testing.assert_allclose(lite_out, keras_out, atol=1e-5)


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
    _assert_runs_the_users_lambda(rebuilt, model)
    np.testing.assert_allclose(rebuilt.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)


def sequential_model() -> keras.Model:
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(X)
    layers = [keras.layers.Lambda(lambda t: clip(t), name="clip"), norm, keras.layers.Conv2D(4, 3, name="conv"),
              keras.layers.GlobalAveragePooling2D(name="pool"), keras.layers.Dense(4, name="head")]
    return keras.Sequential([keras.Input((8, 8, 3)), *layers])


@pytest.mark.parametrize("make", [_graph.rebuild, kstruct.quantization.quantize], ids=["rebuild", "quantize"])
def test_a_sequential_model_keeps_its_lambda_and_normalization(make):
    model = sequential_model()
    rebuilt = make(model)
    _assert_normalizes(rebuilt, model)
    _assert_runs_the_users_lambda(rebuilt, model)


def test_quantize_keeps_an_adapted_normalization_and_the_lambda(model):
    quantized = kstruct.quantization.quantize(model)
    _assert_normalizes(quantized, model)
    _assert_runs_the_users_lambda(quantized, model)


@pytest.mark.parametrize("strategy", ["prune(0.5)", "prune_channels(0.5)", "drop_blocks(1)", "cluster(8)", "distill"])
def test_every_rebuilding_step_keeps_an_adapted_normalization_and_the_lambda(model, strategy, tmp_path):
    result = kstruct.optimize(model, strategy, train_data=(X, Y), epochs=1, batch_size=16, target="float32")
    _assert_normalizes(result.model, model)
    _assert_runs_the_users_lambda(result.model, model)
    _agree(result.tflite, result.model)
    if strategy == "prune(0.5)":  # safe mode stays on: kstruct copied the live function, it never allowed loading code
        folder = result.save(tmp_path / "out")
        with pytest.raises(ValueError, match="deserialization of a `Lambda` layer whose `function` is a Python lambda"):
            keras.models.load_model(folder / "model.keras")


def test_kstruct_optimize_on_a_saved_model_keeps_its_normalization(tmp_path):
    model = user_model(with_lambda=False)  # a file with a Lambda needs the CLI's explicit opt-in
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    done = kstruct_cli("optimize", "m.keras", "--strategy", "prune(0.5)", "--data", "d.npz", "--target", "float32",
                       "--epochs", "1", "--batch-size", "8", "--out", "o", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = keras.models.load_model(tmp_path / "o" / "model.keras")
    _agree(tmp_path / "o" / "model.tflite", loaded)
    _assert_normalizes(loaded, model)


def test_a_rebuilt_string_lookup_keeps_its_adapted_vocabulary():
    lookup = keras.layers.StringLookup(name="lookup")
    lookup.adapt(np.array([["b"], ["a"], ["b"], ["c"], ["b"], ["a"]]))
    inputs = keras.Input((1,), dtype="string")
    model = keras.Model(inputs, keras.layers.Identity(name="same")(lookup(inputs)))
    words = np.array([["a"], ["b"], ["c"], ["z"]])
    rebuilt = _graph.rebuild(model)
    assert rebuilt.get_layer("lookup").get_vocabulary() == ["[UNK]", "b", "a", "c"]
    if keras.backend.backend() == "tensorflow":  # string tensors exist only there (elsewhere: in tf.data)
        np.testing.assert_array_equal(np.asarray(rebuilt(words)), [[2], [1], [3], [0]])
        np.testing.assert_array_equal(np.asarray(rebuilt(words)), np.asarray(model(words)))
