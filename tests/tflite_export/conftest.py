"""Shared fixtures: one trained example CNN and its converted files, made once per session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import tflite_export
from kstruct.data import load_mnist_5k


@pytest.fixture(scope="session")
def mnist():
    (x_train, y_train), (x_test, y_test) = load_mnist_5k()
    return x_train[:2000], y_train[:2000], x_test[:300], y_test[:300]


@pytest.fixture(scope="session")
def trained_cnn(trained_example_cnn):
    """The example CNN trained one epoch on `mnist`'s training rows (tests/conftest.py)."""
    return trained_example_cnn


@pytest.fixture(scope="session")
def calibration(mnist):
    return mnist[0][:100]


@pytest.fixture(scope="session")
def cnn_blob(trained_cnn, calibration):
    """`cnn_blob(target)`: the trained CNN converted for `target`, cached per session."""
    cache: dict[str, bytes] = {}

    def get(target: str) -> bytes:
        if target not in cache:
            data = calibration if tflite_export.TARGET_TABLE[target].needs_data else None
            cache[target] = tflite_export.convert(trained_cnn, target, data)
        return cache[target]

    return get


@pytest.fixture(scope="session")
def tiny_dense():
    """A 2-layer Dense model on 8 features: the smallest thing that converts."""
    import keras

    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])


@pytest.fixture
def rng():
    return np.random.default_rng(0)
