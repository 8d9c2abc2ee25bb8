"""Initial centroids for weight clustering: k-means++, linear, density and random.

Plain NumPy on one weight (or one channel) at a time: initialization runs once,
outside the training step, so it need not be traceable.
"""

from __future__ import annotations

import numpy as np

INITS = ("kmeans++", "linear", "density", "random")
LLOYD_ITERATIONS = 100  # an upper bound: they stop when nothing moves
# Centroids and shares are fitted on at most this many of a kernel's weights: a 1-D
# distribution needs no more, and a large kernel (an Embedding of millions) would cost minutes
# and gigabytes (every iteration compares each weight with each centroid).
FIT_SAMPLE = 65_536
# A weight pays 1% of its kernel's variance per bit of assignment entropy. On the example CNN
# (README, "Weight clustering by hand"), after pruning, that gzips the int8 file 9.9% smaller
# than nearest-centroid clustering, at an accuracy within the seed-to-seed spread.
DEFAULT_ENTROPY_WEIGHT = 0.01


def _linear(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.linspace(values.min(), values.max(), k)


def _density(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    # Evenly spaced in the cumulative distribution: dense regions get more centroids.
    return np.quantile(values, (np.arange(k) + 0.5) / k)


def _random(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.uniform(values.min(), values.max(), size=k))


def _kmeans_plus_plus(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, 2007); `initial_centroids` then runs the Lloyd iterations."""
    centroids = [values[rng.integers(len(values))]]
    distances = (values - centroids[0]) ** 2
    for _ in range(1, k):
        total = distances.sum()
        pick = rng.choice(len(values), p=distances / total) if total > 0 else rng.integers(len(values))
        centroids.append(values[pick])
        distances = np.minimum(distances, (values - values[pick]) ** 2)
    return np.sort(np.asarray(centroids, dtype=np.float64))


def assignment_costs(values: np.ndarray, centroids: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """`(w - c)**2 + rate_c` for every value (rows) and centroid (columns): what a weight pays to join `c`."""
    return (values[:, None] - centroids[None, :]) ** 2 + rates[None, :]


def _rates(counts: np.ndarray, scale: float) -> np.ndarray:
    """`scale * -log2(share)` per centroid; an empty centroid gets the cost of a share of 1e-9."""
    share = counts / max(counts.sum(), 1)
    return scale * -np.log2(np.maximum(share, 1e-9))


def entropy_constrained(
    values: np.ndarray, centroids: np.ndarray, entropy_weight: float, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Entropy-constrained k-means (Chou, Lookabaugh and Gray, 1989): `(centroids, rates)`.

    Why: a clustered kernel is paid for in gzip's bits, which follow the entropy of
    the assignments, not in distortion alone. Each weight joins the centroid with the
    least `(w - c)**2 + lambda * -log2(share_c)`, `lambda = entropy_weight * var(w)`:
    a busy centroid is cheaper to join, so the shares grow uneven and the kernel
    compresses better at almost the same distortion. Each iteration reassigns, then
    moves the centroids to their means and the rates to the new shares (`iterations`
    0: the rates of the given centroids only). `entropy_weight` 0 is plain Lloyd.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    centroids = np.asarray(centroids, dtype=np.float64).copy()
    k = len(centroids)
    scale = float(entropy_weight) * float(values.var())
    rates = np.zeros(k)
    for _ in range(iterations + 1):
        nearest = assignment_costs(values, centroids, rates).argmin(axis=1)
        counts = np.bincount(nearest, minlength=k)
        updated_rates = _rates(counts, scale)
        if iterations == 0:
            return centroids, updated_rates
        sums = np.bincount(nearest, weights=values, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids, rtol=1e-7, atol=0) and np.allclose(updated_rates, rates, rtol=1e-7, atol=0):
            break
        centroids, rates = updated, updated_rates
    order = np.argsort(centroids)
    return centroids[order], rates[order]


_INIT_FUNCTIONS = {"kmeans++": _kmeans_plus_plus, "linear": _linear, "density": _density, "random": _random}


def check_entropy_weight(entropy_weight: float) -> float:
    if isinstance(entropy_weight, bool) or not float(entropy_weight) >= 0.0:
        raise ValueError(f"Expected `entropy_weight` >= 0. Received: entropy_weight={entropy_weight!r}")
    return float(entropy_weight)


def check_init(init: str) -> str:
    if init not in _INIT_FUNCTIONS:
        raise ValueError(f"Expected `init` to be one of {INITS}. Received: init={init!r}")
    return init


def initial_centroids(
    values: np.ndarray, k: int, init: str, rng: np.random.Generator, entropy_weight: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """`(centroids, rates)` for the 1-D `values`: `k` centroids by `init`, float32, sorted, and their rates.

    "kmeans++" seeds, then runs entropy-constrained Lloyd iterations to convergence;
    the other inits keep their centroids, and only their rates are computed. Beyond
    `FIT_SAMPLE` weights, both are fitted on a random sample of that many.
    """
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        return np.zeros(k, dtype=np.float32), np.zeros(k, dtype=np.float32)
    if values.size > FIT_SAMPLE:  # sampled before the float64 copy, which then holds only the sample
        values = rng.choice(values, FIT_SAMPLE, replace=False)
    values = values.astype(np.float64)
    seeds = _INIT_FUNCTIONS[check_init(init)](values, k, rng)
    iterations = LLOYD_ITERATIONS if init == "kmeans++" else 0
    centroids, rates = entropy_constrained(values, seeds, entropy_weight, iterations)
    return centroids.astype(np.float32), rates.astype(np.float32)
