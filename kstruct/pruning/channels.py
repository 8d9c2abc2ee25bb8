"""Channel pruning with real surgery: `channel_groups`, `prune_channels`, and the `strip` that shrinks layers.

`prune_channels` wraps every layer that reads a pruned group's channels in a
`ChannelMaskWrapper`; training with plain `fit` masks the lowest-ranked channels
on the schedule. `strip_channels` (reached through `kstruct.pruning.strip`) then
rebuilds the model through the graph core with fewer filters and units: a plain
Keras model that computes what the masked model computed.

The channel groups come from `kstruct._graph.channels`. This module adds the one
rule that matters for pruning and not for search: a layer that mixes channels
(LayerNormalization, a softmax over channels) would see a removed channel's
value, so the groups it touches are frozen too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from kstruct._graph import ChannelAnalysis, ChannelGroup, Graph, Ref, analyze, check_graph_model, leaf_layers, parse, rebuild
from kstruct._graph.channels import member_positions, narrow
from kstruct._graph.graph import layers_by_name
from kstruct._graph.rebuild import copy_compile, fresh_copy
from kstruct.errors import PruningError
from kstruct.pruning.channels_criteria import group_scores
from kstruct.pruning.channels_wrapper import ChannelMaskWrapper, reader_weight
from kstruct.engine.layer_selection import LayerSelector, layer_predicate
from kstruct.pruning.schedules import ConstantSparsity, PruningSchedule

_SOFTMAX = ("softmax", "log_softmax")


@dataclass
class ChannelGroups:
    """The coupled channel groups of a model, and which are frozen and why.

    Attributes:
        groups: every group made by at least one layer (`kstruct._graph.ChannelGroup`).
        graph, analysis: the parsed model they come from.
    """

    groups: list[ChannelGroup]
    graph: Graph = field(repr=False)
    analysis: ChannelAnalysis = field(repr=False)

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if not g.frozen]

    @property
    def frozen(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.frozen]

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __str__(self) -> str:
        lines = [f"{'group (producers)':<40} {'channels':>8}  {'status':<8} layers / why frozen"]
        for group in self.groups:
            producers = "+".join(group.producers)
            if group.frozen:
                status, detail = "frozen", "; ".join(group.reasons)
            else:
                status, detail = "prunable", ", ".join(dict.fromkeys(m.layer for m in group.members))
            lines.append(f"{producers:<40} {group.size:>8}  {status:<8} {detail}")
        lines.append(f"{len(self.prunable)} prunable, {len(self.frozen)} frozen")
        return "\n".join(lines)


def _freeze_mixers(graph: Graph, analysis: ChannelAnalysis, model: keras.Model) -> None:
    """Freezes groups whose channels a layer mixes, and groups read by a layer that cannot be masked."""
    layers = layers_by_name(model)
    for node in graph.nodes:
        opts, cls = node.options, node.class_name
        if not node.is_layer or analysis.kinds.get(node.name) == "opaque":
            continue
        kind = analysis.kinds[node.name]
        mixes = cls == "LayerNormalization" or cls == "Softmax" or (
            cls == "Activation" and opts.get("activation") in _SOFTMAX
        )
        if mixes and kind in ("channel", "pass"):
            for signature in analysis.call_signatures[node.name]:
                for group in signature.groups:
                    analysis.fix(group, f"{node.name} ({cls}): mixes the channels, a removed one would change the rest")
        if kind == "width" and opts.get("activation") in _SOFTMAX:
            group = analysis.signatures[Ref(node.name)].groups[0]
            analysis.fix(group, f"{node.name}: softmax over its channels")
        if kind == "width" and reader_weight(layers[node.name]) is None:
            for group in analysis.in_signatures[node.name].groups:
                analysis.fix(group, f"{node.name} ({cls}): kstruct cannot mask this layer's inputs")


def _analyze(model: keras.Model) -> ChannelGroups:
    graph = parse(model, flatten=True)  # a backbone's channels are pruned inside it
    analysis = analyze(graph)
    _freeze_mixers(graph, analysis, model)
    return ChannelGroups([g for g in analysis.groups() if g.producers], graph, analysis)


def channel_groups(model: keras.Model) -> ChannelGroups:
    """The groups of channels that must be pruned together, with the frozen ones and why.

    Args:
        model: a built Sequential or functional model; not modified.

    Returns:
        A `ChannelGroups`; `print` it for a table.

    Example:

    >>> print(kstruct.pruning.channel_groups(model))  # doctest: +SKIP
    """
    check_graph_model(model, "kstruct.pruning.channel_groups")
    return _analyze(model)


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"Expected `ratio` (the fraction of channels to remove) in [0, 1). Received: ratio={ratio!r}")
    return float(ratio)


def prune_channels(
    model: keras.Model,
    ratio: float,
    criterion: str = "l2",
    round_to: int = 1,
    layers: LayerSelector = None,
    schedule: PruningSchedule | None = None,
    *,
    data=None,
    loss=None,
) -> keras.Model:
    """Returns a copy of `model` that masks the least important `ratio` of each group's channels while it trains.

    Channels are ranked once, here, over the whole group (`criterion`); the schedule
    then masks the lowest-ranked ones, step by step, inside `fit`. Call
    `kstruct.pruning.strip` afterwards for the genuinely smaller model.

    Args:
        model: a Sequential or functional model; not modified.
        ratio: fraction of each prunable group's channels to remove, in [0, 1).
        criterion: "l2" (squared weights over every coupled layer), "bn" (|gamma| of
            the group's BatchNorms; l2 for groups without one) or "taylor"
            (|w * dL/dw| over the group, from a few batches of `data`).
        round_to: kept channels per group are a multiple of this (at least 1 channel is kept).
        layers: which groups: those with a producer matching a name, a regex, a list of
            them or a predicate. Default: every prunable group.
        schedule: when masks update and to which ratio (its final sparsity must be
            `ratio`). Default: `ConstantSparsity(ratio, begin_step=0, frequency=1)`, pruned
            from the first step; pass a `PolynomialDecay` to tighten gradually.
        data: `(x, y)` arrays, for criterion="taylor".
        loss: the loss for "taylor" when `model` is not compiled.

    Returns:
        A new model, compiled like `model` if it was.

    Raises:
        ValueError: a ratio outside [0, 1), an unknown criterion, a bad round_to or schedule.
        PruningError: no group can be pruned (the message lists why each is frozen).
    """
    ratio = _check_ratio(ratio)
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"Expected `round_to` to be an integer >= 1. Received: round_to={round_to!r}")
    if schedule is None:
        schedule = ConstantSparsity(ratio, begin_step=0, frequency=1)
    elif abs(schedule.final_sparsity - ratio) > 1e-9:
        raise ValueError(
            f"The schedule ends at sparsity {schedule.final_sparsity}, but ratio={ratio}; make them equal."
        )
    check_graph_model(model, "kstruct.pruning.prune_channels")
    found = _analyze(model)
    wanted = layer_predicate(layers)
    layers_named = layers_by_name(model)
    chosen = [g for g in found.prunable if any(wanted(layers_named[p]) for p in g.producers)]
    if not chosen:
        frozen = "; ".join(f"{'+'.join(g.producers)}: {g.reasons[0]}" for g in found.frozen)
        if not frozen:  # not one group: say what the model holds instead
            held = ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in leaf_layers(model) if layer.weights)
            frozen = (
                f"none, since no Conv/Dense layer's output channels can be removed: its layers with weights are "
                f"{held or 'none'} (recurrent layers and Bidirectional/TimeDistributed wrappers are not "
                "channel-pruned; prune(...) prunes their weights)"
            )
        else:  # the layers with weights whose channels the analysis could not follow make no group of their own
            opaque = [
                f"{name} ({type(layers_named[name]).__name__}: {reason})"
                for name, reason in found.analysis.reasons.items()
                if name in layers_named and layers_named[name].weights
            ]
            if opaque:
                frozen += ". Layers whose channels it cannot follow: " + ", ".join(opaque)
        raise PruningError(
            f"kstruct.pruning.prune_channels: model `{model.name}` has no channel group to prune"
            + (f" among layers={layers!r}" if layers is not None else "")
            + f". Frozen groups: {frozen}. Prune a model with Conv/Dense layers whose outputs are not model outputs."
        )
    scores, _ = group_scores(model, chosen, criterion, data=data, loss=loss)
    tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for group, score in zip(chosen, scores):
        rank = np.empty(group.size, dtype="int32")
        rank[np.argsort(-score, kind="stable")] = np.arange(group.size)
        for member in group.members:
            if member.role != "input":
                continue
            width = layers_named[member.layer].input.shape[-1]
            ranks, sizes = tables.setdefault(member.layer, (np.zeros(width, "int32"), np.zeros(width, "int32")))
            positions = member_positions(member, group.size)
            ranks[positions] = rank[:, None]
            sizes[positions] = group.size

    def replace(layer):
        if layer.name in tables:
            return ChannelMaskWrapper(fresh_copy(layer), schedule=schedule, round_to=round_to)
        return fresh_copy(layer)

    def copy_weights(original, new_layer):
        if isinstance(new_layer, ChannelMaskWrapper):
            new_layer.layer.set_weights(original.get_weights())
            ranks, sizes = tables[original.name]
            new_layer.channel_rank.assign(ranks)
            new_layer.group_size.assign(sizes)
        else:
            new_layer.set_weights(original.get_weights())

    return rebuild(model, replace, copy_weights)


def channel_wrappers(model: keras.Model) -> list[ChannelMaskWrapper]:
    """The channel-mask wrappers of a model returned by `prune_channels`, nested models included."""
    return [layer for layer in leaf_layers(model) if isinstance(layer, ChannelMaskWrapper)]


def strip_channels(model: keras.Model) -> keras.Model:
    """The surgery: a plain model without the masked channels (fewer filters/units), same predictions.

    Args:
        model: a model returned by `prune_channels` (trained or not); not modified.
    """
    wrappers = {w.layer.name: w for w in channel_wrappers(model)}
    stale = [name for name, w in wrappers.items() if int(keras.ops.convert_to_numpy(w.mask_updates)) == 0]
    if stale:
        warnings.warn(
            f"kstruct: the channel masks never updated for {', '.join(stale)} (the model was not trained with "
            "fit after prune_channels, or the schedule had not begun), so no channel is removed there.",
            stacklevel=3,
        )

    def replace(layer):
        return fresh_copy(layer.layer) if isinstance(layer, ChannelMaskWrapper) else fresh_copy(layer)

    def copy_weights(original, new_layer):
        if not isinstance(original, ChannelMaskWrapper):
            new_layer.set_weights(original.get_weights())
            return
        masked = keras.ops.convert_to_numpy(original.masked_weight())
        weight = original.reading_weight
        new_layer.set_weights([masked if v is weight else v.numpy() for v in original.layer.weights])

    plain = rebuild(model, replace, copy_weights)
    found = _analyze(plain)
    keep = {}
    for group in found.prunable:
        readers = [m for m in group.members if m.role == "input"]
        if not readers or any(m.layer not in wrappers for m in readers):
            continue  # a reader without a mask still needs every channel
        kept = np.zeros(group.size, dtype=bool)
        for member in readers:
            mask = keras.ops.convert_to_numpy(wrappers[member.layer].mask)
            kept |= mask[member_positions(member, group.size)[:, 0]] > 0
        if not kept.all():
            keep[found.analysis.signatures[Ref(group.producers[0])].groups[0]] = np.flatnonzero(kept)
    if not keep:
        return plain
    narrowed, _ = narrow(plain, found.graph, found.analysis, keep)
    copy_compile(model, narrowed)
    return narrowed
