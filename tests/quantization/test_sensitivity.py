"""The int8 sensitivity ranking (`kstruct.quantization.sensitivity`): an outlier weight ranks its layer first."""

import keras
import numpy as np

from kstruct.quantization.sensitivity import layer_sensitivity
from tests.search.conftest import blobs


def _model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(12, activation="relu", name="hidden")(x)
    x = keras.layers.Dense(10, activation="relu", name="fragile")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="fragile_mlp")


def test_a_layer_with_an_outlier_weight_ranks_first_and_the_model_is_untouched():
    keras.utils.set_random_seed(0)
    x, _ = blobs(n=64)
    model = _model()
    kernel, bias = model.get_layer("fragile").get_weights()
    kernel[0, 0] = 200.0 * np.abs(kernel).max()  # its per-tensor int8 scale now rounds every other weight to 0
    model.get_layer("fragile").set_weights([kernel, bias])
    weights = [w.copy() for w in model.get_weights()]

    ranking = layer_sensitivity(model, x)

    assert [name for name, _ in ranking][0] == "fragile"
    assert sorted(name for name, _ in ranking) == ["classifier", "conv", "fragile", "hidden"]
    assert ranking[0][1] > 2 * ranking[1][1] > 0, ranking
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    # A Sequential model is ranked through a functional view of its own layers.
    sequential = keras.Sequential([keras.Input((8, 8, 1)), *[type(layer).from_config(layer.get_config()) for layer in model.layers[1:]]])
    sequential.set_weights(model.get_weights())
    assert [name for name, _ in layer_sensitivity(sequential, x)] == [name for name, _ in ranking]
