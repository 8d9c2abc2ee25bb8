"""Tiny models and data for the search tests (2 shared CPU cores: keep every trial small)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest


def tiny_cnn(input_shape=(8, 8, 1), classes=3) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_same"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="dense1"),
            keras.layers.Dense(classes, activation="softmax", name="classifier"),
        ],
        name="tiny_cnn",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def residual_model(input_shape=(8, 8, 3), classes=3) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", name="block1_conv")(x)
    y = keras.layers.BatchNormalization(name="block1_bn")(y)
    y = keras.layers.ReLU(name="block1_relu")(y)
    x = keras.layers.Add(name="block1_add")([x, y])
    y = keras.layers.Conv2D(8, 1, name="block2_conv")(x)
    x = keras.layers.Add(name="block2_add")([x, y])
    side = keras.layers.Conv2D(4, 1, activation="relu", name="side")(inputs)
    x = keras.layers.Concatenate(name="concat")([x, side])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name="residual")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def blobs(n=240, shape=(8, 8, 1), classes=3, seed=0):
    """Learnable toy images: each class is a bright patch in its own place."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype("int32")
    x = rng.normal(0, 0.3, (n, *shape)).astype("float32")
    for c in range(classes):
        x[y == c, c * 2 : c * 2 + 3, c * 2 : c * 2 + 3, :] += 2.0
    return x, y


def blob_data():
    """`blobs()` as ((x, y), validation): 180 rows to train on, 60 to validate."""
    x, y = blobs()
    return (x[:180], y[:180]), (x[180:], y[180:])


@pytest.fixture
def data():
    return blob_data()
