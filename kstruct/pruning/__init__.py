"""Pruning for Keras 3: `prune` (magnitude) or `prune_channels` (structured), train with `fit`, `strip`,
and measure `sparsity`."""

from kstruct.pruning.channels import ChannelGroups, channel_groups, prune_channels
from kstruct.pruning.channels_wrapper import ChannelMaskWrapper
from kstruct.pruning.prune import SparsityReport, never_updated, prune, sparsity, strip
from kstruct.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kstruct.pruning.wrapper import PruneWrapper

__all__ = [
    "ChannelGroups",
    "ChannelMaskWrapper",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneWrapper",
    "PruningSchedule",
    "SparsityReport",
    "channel_groups",
    "never_updated",
    "prune",
    "prune_channels",
    "sparsity",
    "strip",
]
