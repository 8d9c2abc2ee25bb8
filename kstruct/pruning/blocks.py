"""Block removal: residual branches `x + f(x)` whose removal leaves `x`, found, ranked and cut out.

Removing channels buys float32 time; on CPUs where int8 time is mostly per-layer
cost, only removing layers buys int8 time. A residual block is the safe unit: with
the branch `f` gone, `x + f(x)` becomes `x`, the shapes still line up, and the rest
of the model keeps its weights. Blocks are ranked by a cheap score on data:

- "norm": how much the branch adds, `||f(x)|| / ||x||` averaged over the samples;
- "loss": how much the loss rises with the block removed (one ablation each).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from kstruct._graph import Graph, Ref, build, check_graph_model, parse, tensor_refs
from kstruct._graph.rebuild import copy_compile
from kstruct.errors import PruningError

CRITERIA = ("norm", "loss")
_MERGES = ("Add",)


@dataclass
class Block:
    """A residual block: the branch's layers, the Add that joins it, and the shortcut tensor it leaves.

    Attributes:
        name: the Add layer's (or raw op's) name.
        layers: the branch's nodes in graph order, then the Add.
        skip: the shortcut tensor that replaces the Add's output when the block is removed.
    """

    name: str
    layers: list[str]
    skip: Ref


def _branch(graph: Graph, skip: Ref, branch: Ref, add: str, users: dict, outputs: set) -> list[str] | None:
    """The nodes between `skip` and `branch` if they depend on `skip` alone and feed only the Add."""
    if branch == skip:
        return None
    seen, stack = set(), [branch.layer]
    names = {n.name for n in graph.nodes}
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        if name not in names:
            return None  # reached a model input other than the shortcut
        node = graph.node(name)
        if len(node.calls) != 1:
            return None  # a shared layer lives outside the block too
        seen.add(name)
        stack.extend(ref.layer for ref in tensor_refs(node.calls[0]) if ref != skip)
    for ref, consumers in users.items():
        if ref.layer in seen and any(c not in seen and c != add for c in consumers):
            return None
    if any(ref.layer in seen for ref in outputs):
        return None
    order = [n.name for n in graph.nodes]
    return sorted(seen, key=order.index)


def _blocks(graph: Graph) -> list[Block]:
    users, outputs, found = graph.consumers(), set(graph.output_refs()), []
    for node in graph.nodes:
        if node.class_name not in _MERGES or len(node.calls) != 1:
            continue
        inputs = tensor_refs(node.calls[0])
        shapes = {graph.shapes.get(r) for r in inputs} | {graph.shapes.get(Ref(node.name))}
        if len(inputs) != 2 or len(shapes) != 1:
            continue
        for skip, branch in ((inputs[0], inputs[1]), (inputs[1], inputs[0])):
            layers = _branch(graph, skip, branch, node.name, users, outputs)
            if layers:
                found.append(Block(node.name, layers + [node.name], skip))
                break
    return found


def check_block_count(model: keras.Model, blocks: Sequence[Block], n: int) -> None:
    """Raises PruningError, listing the candidates, when `n` blocks cannot be dropped."""
    if n > len(blocks):
        listed = ", ".join(b.name for b in blocks) or "none"
        raise PruningError(
            f"drop_blocks({n}): model `{model.name}` has {len(blocks)} removable residual block(s) ({listed}); "
            f"ask for at most {len(blocks)}."
        )


def removable_blocks(model: keras.Model) -> list[Block]:
    """The residual blocks `x + f(x)` of `model` whose branch can be removed, leaving `x`.

    A branch qualifies when it depends only on the shortcut, nothing outside it reads
    its tensors, and the Add's inputs and output have one shape.

    Raises:
        UnsupportedModelError: a subclassed or unbuilt model.
    """
    check_graph_model(model, "kstruct.pruning.removable_blocks")
    return _blocks(parse(model))


def _without(model: keras.Model, graph: Graph, blocks: Sequence[Block]) -> keras.Model:
    aliases = {name: block.skip for block in blocks for name in block.layers}
    new_model, layers = build(graph, {}, aliases)
    for name, layer in layers.items():
        if graph.node(name).is_layer:
            layer.set_weights(model.get_layer(name).get_weights())
    copy_compile(model, new_model)
    return new_model


def _inputs_of(data):
    return data[0] if isinstance(data, (tuple, list)) and len(data) == 2 else data


def score_blocks(
    model: keras.Model, blocks: Sequence[Block], criterion: str = "norm", *, data=None, loss=None
) -> dict[str, float]:
    """Each block's importance on `data` (lower: cheaper to remove).

    Args:
        criterion: "norm" (`||f(x)|| / ||x||`; data may be inputs alone) or "loss" (the
            rise in loss with the block removed; data must be `(x, y)`, the model
            compiled or `loss` given).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"Expected `criterion` to be one of {CRITERIA}. Received: criterion={criterion!r}")
    if data is None:
        raise ValueError(f"Scoring blocks by {criterion!r} needs data: pass data=(x, y) (or inputs x for 'norm').")
    graph = parse(model)
    if criterion == "norm":
        refs = []
        for block in blocks:
            add = graph.node(block.name)
            branch = next(r for r in tensor_refs(add.calls[0]) if r != block.skip)
            refs += [branch, block.skip]
        probe, _ = build(dataclasses.replace(graph, outputs=refs), {}, {})
        for layer in probe.layers:
            if layer.weights:
                layer.set_weights(model.get_layer(layer.name).get_weights())
        values = probe.predict(_inputs_of(data), verbose=0)
        scores = {}
        for i, block in enumerate(blocks):
            branch, skip = (np.reshape(v, (len(v), -1)) for v in (values[2 * i], values[2 * i + 1]))
            ratio = np.linalg.norm(branch, axis=1) / np.maximum(np.linalg.norm(skip, axis=1), 1e-12)
            scores[block.name] = float(np.mean(ratio))
        return scores
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("criterion='loss' needs labelled data: pass data=(x, y).")
    if loss is None and not model.compiled:
        raise ValueError("criterion='loss' needs a loss: compile the model or pass loss=.")
    x, y = data

    def evaluate(candidate):  # candidates are copies: the user's model is never recompiled
        if loss is not None:
            candidate.compile(loss=loss)
        return float(candidate.evaluate(x, y, verbose=0, return_dict=True)["loss"])

    base = evaluate(_without(model, graph, []))
    return {b.name: evaluate(_without(model, graph, [b])) - base for b in blocks}


def drop_blocks(
    model: keras.Model,
    n: int | None = None,
    *,
    names: Sequence[str] | None = None,
    criterion: str = "norm",
    data=None,
    loss=None,
) -> keras.Model:
    """Returns a copy of `model` without `n` residual blocks (the lowest-scored) or the blocks `names`.

    Args:
        model: a functional model; not modified.
        n: how many blocks to remove, ranked by `score_blocks(criterion, data)`.
        names: the blocks (their Add layers' names) to remove instead of ranking.
        criterion, data, loss: see `score_blocks`; needed with `n`.

    Returns:
        The smaller model, its remaining layers keeping their weights, compiled as `model` was.

    Raises:
        ValueError: neither or both of `n` and `names`, an unknown name.
        PruningError: fewer removable blocks than `n`.
    """
    check_graph_model(model, "kstruct.pruning.drop_blocks")
    if (n is None) == (names is None):
        raise ValueError("Pass exactly one of `n` (how many blocks to drop) or `names` (which ones).")
    graph = parse(model)
    blocks = _blocks(graph)
    listed = ", ".join(b.name for b in blocks) or "none"
    if names is not None:
        unknown = [name for name in names if name not in {b.name for b in blocks}]
        if unknown:
            raise ValueError(f"Not removable blocks of `{model.name}`: {unknown}. Removable blocks: {listed}")
        chosen = [b for b in blocks if b.name in set(names)]
    else:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` to be an integer >= 1. Received: n={n!r}")
        check_block_count(model, blocks, n)
        scores = score_blocks(model, blocks, criterion, data=data, loss=loss)
        chosen = sorted(blocks, key=lambda b: scores[b.name])[:n]
    return _without(model, graph, chosen)
