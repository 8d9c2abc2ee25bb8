"""Shared fixtures: MNIST-5k slices, the float CNN (trained once for the whole suite) and its QAT model."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from kstruct.data import load_mnist_5k


@pytest.fixture(scope="session")
def digits():
    (x_train, y_train), (x_test, y_test) = load_mnist_5k()
    return x_train[:2000], y_train[:2000], x_test, y_test


@pytest.fixture(scope="session")
def float_cnn(trained_example_cnn):
    """The example CNN trained one epoch on `digits`' training rows (tests/conftest.py)."""
    return trained_example_cnn


@pytest.fixture(scope="session")
def qat_cnn(float_cnn, digits):
    """The float CNN after `quantize` and one epoch of QAT fine-tuning."""
    import keras

    from kstruct.quantization import quantize

    keras.utils.set_random_seed(1)
    x_train, y_train, _, _ = digits
    model = quantize(float_cnn)
    model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def qat_cnn_int8(qat_cnn, digits):
    import tflite_export

    return tflite_export.convert(qat_cnn, "int8", representative_data=digits[0][:100])
