"""Pruning for Keras 3: `prune` (magnitude) or `prune_channels` (structured), train with `fit`, `strip`,
and measure `sparsity`."""

from kstruct.pruning.blocks import Block, drop_blocks, removable_blocks, score_blocks
from kstruct.pruning.channels import ChannelGroups, channel_groups, prune_channels
from kstruct.pruning.channels_wrapper import ChannelMaskWrapper
from kstruct.pruning.prune import SparsityReport, never_updated, prune, sparsity, strip
from kstruct.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kstruct.pruning.wrapper import PruneWrapper

__all__ = [
    "Block",
    "ChannelGroups",
    "ChannelMaskWrapper",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneWrapper",
    "PruningSchedule",
    "SparsityReport",
    "channel_groups",
    "drop_blocks",
    "never_updated",
    "prune",
    "prune_channels",
    "removable_blocks",
    "score_blocks",
    "sparsity",
    "strip",
]
