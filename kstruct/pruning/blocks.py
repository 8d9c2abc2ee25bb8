"""Block removal: parts of a model whose removal leaves their input, found, ranked and cut out.

Removing channels buys float32 time; on CPUs where int8 time is mostly per-layer
cost, only removing layers buys int8 time. Two kinds of block can go while the
shapes still line up and the rest of the model keeps its weights:

- a residual block `x + f(x)`: with the branch `f` gone, it becomes `x`;
- a shape-preserving layer in a plain chain (a Conv/Dense whose output has its
  input's shape, with the BatchNorm, activation and dropout layers right after
  it): `g(x)` becomes `x`. Layers inside a residual branch belong to that block.

Blocks are ranked by a cheap score on data:

- "norm": how much the block changes its input, `||out - x|| / ||x||` averaged over
  the samples (for a residual block, `||f(x)|| / ||x||`);
- "loss": how much the loss rises with the block removed (one ablation each, all
  through one probe model whose gates switch each block off in turn).

A backbone nested inside the model is seen through: its blocks are candidates, and the
smaller model comes back flat (the nested model's layers at the top level).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from kstruct._graph import Graph, Ref, build, check_graph_model, parse, tensor_refs
from kstruct._graph.graph import Node, layers_by_name
from kstruct._graph.rebuild import copy_compile
from kstruct._graph.state import carry_state
from kstruct.errors import PruningError
from tflite_export.verify import keras_outputs

CRITERIA = ("norm", "loss")
_MERGES = ("Add",)
# Layers that can be removed when their output has their input's shape, and the
# per-channel or elementwise layers that follow them and go with them.
_SHAPE_PRESERVING = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "Dense")
_COMPANIONS = (
    "BatchNormalization", "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
)


@dataclass
class Block:
    """A removable block: its layers and the tensor that replaces its output when it is removed.

    Attributes:
        name: its last node's name: the Add (layer or raw op) of a residual block, or the
            last layer of a shape-preserving chain.
        layers: the nodes removed, in graph order (a residual branch, then its Add).
        skip: the tensor that replaces the block's output (the shortcut, or the chain's input).
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


def _chains(graph: Graph, taken: set[str]) -> list[Block]:
    """Shape-preserving layers with their companions, in plain chains, outside the residual blocks in `taken`."""
    users, outputs, found = graph.consumers(), set(graph.output_refs()), []

    def single(name: str) -> Node | None:
        node = graph.node(name)
        ok = node.is_layer and not node.is_model and len(node.calls) == 1 and name not in taken
        return node if ok and len(tensor_refs(node.calls[0])) == 1 else None

    for node in graph.nodes:
        if node.class_name not in _SHAPE_PRESERVING or single(node.name) is None:
            continue
        skip, layers = tensor_refs(node.calls[0])[0], [node.name]
        while Ref(layers[-1]) not in outputs and len(users.get(Ref(layers[-1]), [])) == 1:
            follower = single(users[Ref(layers[-1])][0])
            if follower is None or follower.class_name not in _COMPANIONS:
                break
            layers.append(follower.name)
        end = Ref(layers[-1])
        if end not in outputs and users.get(end) and graph.shapes.get(end) == graph.shapes.get(skip) is not None:
            found.append(Block(layers[-1], layers, skip))
    return found


def _blocks(graph: Graph) -> list[Block]:
    """Residual blocks, then shape-preserving chains, in graph order each."""
    residual = _residual_blocks(graph)
    return residual + _chains(graph, {name for block in residual for name in block.layers})


def _residual_blocks(graph: Graph) -> list[Block]:
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
            f"drop_blocks({n}): model `{model.name}` has {len(blocks)} removable block(s) ({listed}); "
            f"ask for at most {len(blocks)}."
        )


def removable_blocks(model: keras.Model) -> list[Block]:
    """The blocks of `model` that can be removed, leaving their input: residual blocks, then chains.

    A residual branch `x + f(x)` qualifies when it depends only on the shortcut, nothing
    outside it reads its tensors, and the Add's inputs and output have one shape. A
    shape-preserving layer (Conv, Dense) outside residual branches qualifies with the
    BatchNorm/activation/dropout layers that follow it alone, when the last of them
    outputs its input's shape and is not a model output.

    Raises:
        UnsupportedModelError: a subclassed or unbuilt model.
    """
    check_graph_model(model, "kstruct.pruning.removable_blocks")
    return _blocks(parse(model, flatten=True))


def _without(model: keras.Model, graph: Graph, blocks: Sequence[Block]) -> keras.Model:
    aliases = {name: block.skip for block in blocks for name in block.layers}
    new_model, layers = build(graph, {}, aliases)
    originals = layers_by_name(model)
    for name, layer in layers.items():
        if graph.node(name).is_layer:
            layer.set_weights(originals[name].get_weights())
            carry_state(originals[name], layer)
    copy_compile(model, new_model)
    return new_model


def _inputs_of(data):
    return data[0] if isinstance(data, (tuple, list)) and len(data) == 2 else data


class _Gate(keras.layers.Layer):
    """Passes a block's output while `on` is 1, its skip tensor while 0: one probe model
    ablates every block in turn, so scoring traces one evaluation instead of one per block."""

    def build(self, input_shape=None):
        # Set only between evaluations, never in a training step: no cross-replica aggregation.
        self.on = self.add_weight(shape=(), initializer="ones", trainable=False, name="on", aggregation="none")

    def call(self, output, skip):
        return keras.ops.where(keras.ops.greater(self.on, 0.5), output, skip)


def _probe(model: keras.Model, graph: Graph, outputs=None, gates: dict | None = None) -> keras.Model:
    """`graph` rebuilt with `model`'s weights, with other outputs, or with a gate after each block in `gates`."""
    after = {name: (lambda out, tensor_of, gate=gate, skip=skip: gate(out, tensor_of(skip)))
             for name, (gate, skip) in (gates or {}).items()}
    changed = dataclasses.replace(graph, sequential=False, outputs=graph.outputs if outputs is None else outputs)
    probe, layers = build(changed, {}, {}, after=after)
    originals = layers_by_name(model)
    for name, layer in layers.items():
        if graph.node(name).is_layer:
            layer.set_weights(originals[name].get_weights())
            carry_state(originals[name], layer)  # scored on what the model computes: adapted preprocessing kept
    return probe


def score_blocks(
    model: keras.Model, blocks: Sequence[Block], criterion: str = "norm", *, data=None, loss=None
) -> dict[str, float]:
    """Each block's importance on `data` (lower: cheaper to remove).

    Args:
        criterion: "norm" (`||out - x|| / ||x||`; data may be inputs alone) or "loss" (the
            rise in loss with the block removed; data must be `(x, y)`, the model
            compiled or `loss` given). Both build one probe model and run `data` through
            it once per block ("loss") or once in all ("norm"): pass a sample, not a whole
            data set (the `drop_blocks` step scores on at most 256 validation rows).
    """
    return _score(model, parse(model, flatten=True), blocks, criterion, data, loss)


def _score(model: keras.Model, graph: Graph, blocks: Sequence[Block], criterion: str, data, loss) -> dict[str, float]:
    if criterion not in CRITERIA:
        raise ValueError(f"Expected `criterion` to be one of {CRITERIA}. Received: criterion={criterion!r}")
    if data is None:
        raise ValueError(f"Scoring blocks by {criterion!r} needs data: pass data=(x, y) (or inputs x for 'norm').")
    if criterion == "norm":
        probe = _probe(model, graph, outputs=[ref for block in blocks for ref in (Ref(block.name), block.skip)])
        values = keras_outputs(probe, _inputs_of(data))
        scores = {}
        for i, block in enumerate(blocks):
            out, skip = (np.reshape(v, (len(v), -1)) for v in (values[2 * i], values[2 * i + 1]))
            ratio = np.linalg.norm(out - skip, axis=1) / np.maximum(np.linalg.norm(skip, axis=1), 1e-12)
            scores[block.name] = float(np.mean(ratio))
        return scores
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("criterion='loss' needs labelled data: pass data=(x, y).")
    if loss is None and not model.compiled:
        raise ValueError("criterion='loss' needs a loss: compile the model or pass loss=.")
    x, y = data
    gates = {block.name: (_Gate(name=f"kstruct_gate_{i}"), block.skip) for i, block in enumerate(blocks)}
    probe = _probe(model, graph, gates=gates)  # a copy: the user's model is never recompiled
    if loss is not None:
        probe.compile(loss=loss)
    else:
        copy_compile(model, probe)

    def evaluate() -> float:  # batches of 128 rows: a forward pass has no optimizer state to bound it
        return float(probe.evaluate(x, y, batch_size=128, verbose=0, return_dict=True)["loss"])

    base, scores = evaluate(), {}
    for name, (gate, _) in gates.items():
        gate.on.assign(0.0)
        scores[name] = evaluate() - base
        gate.on.assign(1.0)
    return scores


def drop_blocks(
    model: keras.Model,
    n: int | None = None,
    *,
    names: Sequence[str] | None = None,
    criterion: str = "norm",
    data=None,
    loss=None,
) -> keras.Model:
    """Returns a copy of `model` without `n` blocks (the lowest-scored) or the blocks `names`.

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
    graph = parse(model, flatten=True)
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
        scores = _score(model, graph, blocks, criterion, data, loss)
        chosen = sorted(blocks, key=lambda b: scores[b.name])[:n]
    return _without(model, graph, chosen)
