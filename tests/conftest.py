"""Shared fixtures: tiny models and a slice of the bundled digits, so unit tests stay fast."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# The GPU tests run LiteRT's GPU accelerator on lavapipe (Mesa's Vulkan on the CPU), which compiles each
# shader with LLVM when a file is first loaded: on this suite's MobileNetV2 (alpha 0.35, 96x96) that was
# 26 s of CPU with an empty Mesa cache, 5 s with LLVM's optimization passes off and 128-bit vectors
# (`python tflite_export/gpu_runner.py FILE --runs=1`, run with and without these two). The tests check
# outputs and verdicts, not speed; a real GPU's driver ignores both variables.
os.environ.setdefault("GALLIVM_PERF", "nopt")
os.environ.setdefault("LP_NATIVE_VECTOR_WIDTH", "128")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kstruct.data import load_mnist_5k  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def seeded_module():
    """Each module starts from the same seed, whichever worker runs it and after whatever other module:
    tiny models on tiny data learn differently from one initialization to the next, and an accuracy
    bound that holds for one draw must not depend on the test order."""
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def mnist():
    """((x_train, y_train), (x_test, y_test)) from the bundled MNIST-5k."""
    return load_mnist_5k()


@pytest.fixture(scope="session")
def small_mnist(mnist):
    """800 training and 200 test digits: enough to learn, quick to train."""
    (x, y), (xt, yt) = mnist
    return (x[:800], y[:800]), (xt[:200], yt[:200])


@pytest.fixture(scope="session")
def trained_example_cnn():
    """`kstruct.models.example_cnn` trained one epoch on the first 2,000 digits (seed 0): the float model
    the quantization and export tests start from (`float_cnn`, `trained_cnn`), trained once per worker.
    Tests read it and never change it, as kstruct never changes a model it is given."""
    from kstruct.models import compile_for_classification, example_cnn

    (x, y), _ = load_mnist_5k()  # not the `mnist` fixture: tests/tflite_export defines its own
    keras.utils.set_random_seed(0)
    model = compile_for_classification(example_cnn())
    model.fit(x[:2000], y[:2000], epochs=1, batch_size=64, verbose=0)
    return model


def tiny_cnn(name: str = "tiny_cnn") -> keras.Model:
    """A CNN small enough to train in a second: conv, pool, dense."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ],
        name=name,
    )


def compiled(model: keras.Model) -> keras.Model:
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(0)
