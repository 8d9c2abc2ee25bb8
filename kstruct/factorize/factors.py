"""The per-kernel algorithms: truncated SVD, Tucker-2 and the spatial split, in numpy.

Each returns the factor kernels of the layers that replace one layer, shaped as Keras
stores them, and the kernel those factors multiply back to, so a caller (and a test) can
check what the factorized layers compute against the original with that kernel. Factors
are balanced (the singular values split as their square roots between the two sides of an
SVD) so both layers see weights of one scale, which int8 quantization and fine-tuning like.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Factors:
    """The kernels of the chain of layers that replaces one kernel.

    Attributes:
        kernels: one kernel per layer of the chain, in call order.
        rank: the rank kept (a pair `(in, out)` for Tucker-2).
        full_rank: the rank that reproduces the kernel exactly (a pair for Tucker-2).
        energy: the fraction of squared singular values kept (the smaller of the two
            modes for Tucker-2).
        approximation: the kernel the factors multiply back to, in the original's shape.
    """

    kernels: list[np.ndarray]
    rank: int | tuple[int, int]
    full_rank: int | tuple[int, int]
    energy: float
    approximation: np.ndarray


def choose_rank(singular_values: np.ndarray, *, rank: float | None, energy: float | None) -> int:
    """The rank to keep: `rank` as a fraction of the full rank (rounded up), or the fewest
    singular values whose squares add up to `energy` of the total."""
    full = len(singular_values)
    if rank is not None:
        return max(1, min(full, math.ceil(rank * full - 1e-9)))
    squares = np.asarray(singular_values, dtype=np.float64) ** 2
    total = squares.sum()
    if total <= 0:
        return 1
    kept = np.cumsum(squares) / total
    return int(max(1, min(full, np.searchsorted(kept, energy - 1e-12) + 1)))


def _kept_energy(singular_values: np.ndarray, r: int) -> float:
    squares = np.asarray(singular_values, dtype=np.float64) ** 2
    total = squares.sum()
    return float(squares[:r].sum() / total) if total > 0 else 1.0


def svd(matrix: np.ndarray, *, rank: float | None, energy: float | None) -> Factors:
    """`matrix` (m x n) as A (m x r) times B (r x n), by truncated SVD."""
    u, s, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    r = choose_rank(s, rank=rank, energy=energy)
    root = np.sqrt(s[:r])
    a, b = u[:, :r] * root, root[:, None] * vt[:r]
    return Factors([a, b], r, len(s), _kept_energy(s, r), a @ b)


def _mode_basis(kernel: np.ndarray, axis: int, *, rank: float | None, energy: float | None):
    """The leading left singular vectors of `kernel` unfolded along `axis`, and the energy they keep."""
    unfolded = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
    u, s, _ = np.linalg.svd(unfolded, full_matrices=False)
    r = choose_rank(s, rank=rank, energy=energy)
    return u[:, :r], r, len(s), _kept_energy(s, r)


def tucker2(kernel: np.ndarray, *, rank: float | None, energy: float | None) -> Factors:
    """A convolution kernel (*spatial, in, out) as a 1x1 projection to r_in channels, a core
    convolution r_in -> r_out of the same size, and a 1x1 projection back to `out`
    (Tucker-2 by higher-order SVD of the two channel modes)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    spatial = kernel.ndim - 2
    u_in, r_in, full_in, energy_in = _mode_basis(kernel, spatial, rank=rank, energy=energy)
    u_out, r_out, full_out, energy_out = _mode_basis(kernel, spatial + 1, rank=rank, energy=energy)
    core = np.einsum("...io,ia,ob->...ab", kernel, u_in, u_out)
    point = (1,) * spatial
    kernels = [u_in.reshape(*point, *u_in.shape), core, u_out.T.reshape(*point, r_out, u_out.shape[0])]
    approximation = np.einsum("...ab,ia,ob->...io", core, u_in, u_out)
    return Factors(kernels, (r_in, r_out), (full_in, full_out), min(energy_in, energy_out), approximation)


def spatial_split(kernel: np.ndarray, *, rank: float | None, energy: float | None) -> Factors:
    """A 2D kernel (kh, kw, in, out) as a (kh x 1) convolution to r channels then a (1 x kw) one:
    the SVD of the kernel laid out as a (kh * in) x (kw * out) matrix."""
    kernel = np.asarray(kernel, dtype=np.float64)
    kh, kw, c_in, c_out = kernel.shape
    matrix = kernel.transpose(0, 2, 1, 3).reshape(kh * c_in, kw * c_out)
    factors = svd(matrix, rank=rank, energy=energy)
    a, b = factors.kernels
    r = factors.rank
    vertical = a.reshape(kh, 1, c_in, r)
    horizontal = b.reshape(r, kw, c_out).transpose(1, 0, 2).reshape(1, kw, r, c_out)
    approximation = factors.approximation.reshape(kh, c_in, kw, c_out).transpose(0, 2, 1, 3)
    return Factors([vertical, horizontal], r, factors.full_rank, factors.energy, approximation)
