"""The bundled MNIST-5k digits, so examples, tests and benchmarks run with no download."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_MNIST_5K = Path(__file__).resolve().parent / "_data" / "mnist_5k.csv.gz"


def load_mnist_5k(
    *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads 5,000 real MNIST digits shipped with kstruct.

    The split is stratified-free but shuffled with a fixed seed, so every run
    of the demo, tests and benchmarks sees the same train and test images.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: `x` float32 in [0, 1] of
        shape `(n, 28, 28, 1)`, `y` int32 labels 0..9.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"Expected `test_fraction` in (0, 1). Received: test_fraction={test_fraction}"
        )
    with gzip.open(_MNIST_5K, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    x = (table[:, :-1].astype("float32") / 255.0).reshape(-1, 28, 28, 1)
    y = table[:, -1].astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = int(round(len(x) * test_fraction))
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


def load_mnist_5k_splits(
    *, validation_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """MNIST-5k as train / validation / test, so selection and reporting never share images.

    Optimization (and search) select on the validation split; the test split is
    only for the figures reported at the end. The test split is the same as
    `load_mnist_5k`'s; validation is taken out of its training split.

    Returns:
        `((x_train, y_train), (x_val, y_val), (x_test, y_test))`.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"Expected `validation_fraction` in (0, 1). Received: validation_fraction={validation_fraction}"
        )
    (x, y), test = load_mnist_5k(test_fraction=test_fraction, seed=seed)
    n_val = int(round(len(x) * validation_fraction))
    return (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val]), test
