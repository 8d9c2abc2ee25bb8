"""Mixed-precision models convert as their float32 twin (tflite_export/precision.py)."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest

import tflite_export


@contextlib.contextmanager
def global_policy(name: str):
    """The global dtype policy set to `name` inside the block, and the one before it again after it (even on failure)."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def mixed_cnn(policy: str = "mixed_float16", *, adapted: np.ndarray | None = None) -> keras.Model:
    """A tiny 8x8 CNN built under `policy`, a float32 softmax head as Keras's guide advises; with `adapted`,
    an adapted Normalization in front, a Lambda and a nested Sequential block."""
    keras.utils.set_random_seed(3)
    with global_policy(policy):
        inputs = keras.Input((8, 8, 3))
        h = inputs
        if adapted is not None:
            norm = keras.layers.Normalization(name="norm")
            norm.adapt(adapted)
            h = keras.layers.Lambda(lambda t: t * 0.5, name="half")(norm(h))
        h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(h)
        if adapted is not None:
            h = keras.Sequential([keras.layers.Conv2D(8, 1, activation="relu", name="inner")], name="block")(h)
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        h = keras.layers.Dense(16, activation="relu", name="hidden")(h)
        outputs = keras.layers.Dense(4, activation="softmax", dtype="float32", name="out")(h)
        return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(1.0, 2.0, size=(32, 8, 8, 3)).astype("float32")


def _policies(model) -> dict[str, str]:
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(_policies(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            found[layer.name] = layer.dtype_policy.name
    return found


def test_a_float32_model_is_its_own_twin():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert tflite_export.float32_twin(model) is model


def test_the_twin_computes_in_float32_with_the_same_weights_and_the_users_model_is_untouched(x):
    model = mixed_cnn(adapted=x)
    before = [w.copy() for w in model.get_weights()]
    twin = tflite_export.float32_twin(model)
    assert set(_policies(twin).values()) == {"float32"}
    assert _policies(model) == {
        "norm": "mixed_float16", "half": "mixed_float16", "conv": "mixed_float16", "inner": "mixed_float16",
        "gap": "mixed_float16", "hidden": "mixed_float16", "out": "float32",
    }
    assert keras.mixed_precision.global_policy().name == "float32"
    for original, copied in zip(before, twin.get_weights()):
        np.testing.assert_array_equal(original, copied)
    for original, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(original, now)
    # The adapted Normalization normalizes in the twin (its mean is not reset to zeros), and the
    # Lambda runs the user's own function: the twin predicts what the model does, to float16 precision.
    expected = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(np.asarray(twin.predict(x, verbose=0)), expected, atol=3e-3)
    assert np.asarray(twin.get_layer("norm").mean).ravel() == pytest.approx(x.mean(axis=(0, 1, 2)), abs=1e-5)


@pytest.mark.parametrize("target", ["float32", "dynamic", "float16", "int8"])
def test_a_mixed_float16_model_converts_for_each_target_and_the_file_agrees_with_keras(target, x):
    model = mixed_cnn()
    blob = tflite_export.convert(model, target, x if target == "int8" else None)  # was: Flex ops for every target
    analysis = tflite_export.analyze(blob)
    assert not analysis.custom_ops
    # float16 keeps its meaning: float16 weights in the file; the others hold none.
    assert (analysis.dtype_counts.get("float16", 0) > 0) == (target == "float16")
    expected = np.asarray(model.predict(x, verbose=0))
    tolerance = {"float32": 3e-3, "float16": 3e-3, "dynamic": 2e-2, "int8": 3 / 256}[target]
    assert np.abs(tflite_export.predict(blob, x) - expected).max() <= tolerance


def test_mixed_bfloat16_and_pure_float16_models_convert(x):
    for policy in ("mixed_bfloat16", "float16"):
        model = mixed_cnn(policy)
        blob = tflite_export.convert(model, "float32")
        twin = tflite_export.float32_twin(model)
        np.testing.assert_allclose(tflite_export.predict(blob, x), np.asarray(twin.predict(x, verbose=0)), atol=1e-5)
        # bfloat16 keeps 8 bits of mantissa: the file (float32) is closer to the truth than the model is.
        assert np.abs(tflite_export.predict(blob, x) - np.asarray(model.predict(x, verbose=0))).max() < 3e-2
