"""Magnitude pruning for Keras 3: `prune`, train with `fit`, `strip`, and measure `sparsity`."""

from kstruct.pruning.prune import SparsityReport, never_updated, prune, sparsity, strip
from kstruct.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kstruct.pruning.wrapper import PruneWrapper

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneWrapper",
    "PruningSchedule",
    "SparsityReport",
    "never_updated",
    "prune",
    "sparsity",
    "strip",
]
