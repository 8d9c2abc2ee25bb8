"""Initial centroids for weight clustering: k-means++, linear, density and random.

Plain NumPy on one weight (or one channel) at a time: initialization runs once,
outside the training step, so it need not be traceable.
"""

from __future__ import annotations

import numpy as np

INITS = ("kmeans++", "linear", "density", "random")
LLOYD_ITERATIONS = 20


def _linear(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.linspace(values.min(), values.max(), k)


def _density(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    # Evenly spaced in the cumulative distribution: dense regions get more centroids.
    return np.quantile(values, (np.arange(k) + 0.5) / k)


def _random(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.uniform(values.min(), values.max(), size=k))


def _kmeans_plus_plus(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, 2007), then Lloyd iterations to a local optimum."""
    centroids = [values[rng.integers(len(values))]]
    distances = (values - centroids[0]) ** 2
    for _ in range(1, k):
        total = distances.sum()
        pick = rng.choice(len(values), p=distances / total) if total > 0 else rng.integers(len(values))
        centroids.append(values[pick])
        distances = np.minimum(distances, (values - values[pick]) ** 2)
    centroids = np.sort(np.asarray(centroids, dtype=np.float64))
    for _ in range(LLOYD_ITERATIONS):
        nearest = np.abs(values[:, None] - centroids[None, :]).argmin(axis=1)
        sums = np.bincount(nearest, weights=values, minlength=k)
        counts = np.bincount(nearest, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids):
            break
        centroids = updated
    return np.sort(centroids)


_INIT_FUNCTIONS = {"kmeans++": _kmeans_plus_plus, "linear": _linear, "density": _density, "random": _random}


def check_init(init: str) -> str:
    if init not in _INIT_FUNCTIONS:
        raise ValueError(f"Expected `init` to be one of {INITS}. Received: init={init!r}")
    return init


def initial_centroids(values: np.ndarray, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    """`k` centroids for the 1-D `values` by `init`; float32, sorted."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros(k, dtype=np.float32)
    return np.asarray(_INIT_FUNCTIONS[check_init(init)](values, k, rng), dtype=np.float32)
