"""A Sequential or functional model as data: its layers and raw ops, and the tensors between them.

Read from the model's public `get_config` (each node's `inbound_nodes`), so a
`Graph` holds no Keras objects: `clear_session()` cannot invalidate it, and a
rebuild from it (`build`) is one pass over the calls. Raw ops (`x + y`,
`keras.ops.add(a, b)` on symbolic tensors) are nodes like layers, with
`is_layer=False`. A nested model is one node (`is_model`), unless `parse` is asked
to `flatten`: then its layers join the graph in its place (called once per call of
the nested model, so a siamese tower's layers become shared layers), which is what
the structure analyses (channel groups, removable blocks) need to see a backbone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import keras

from kstruct._graph.checks import accepted_keywords, is_graph_model, is_layer
from kstruct._graph.lambdas import lambda_from_parts, live_lambdas


@dataclass(frozen=True)
class Ref:
    """One tensor of the graph: output `index` of call `call` of layer `layer`."""

    layer: str
    call: int = 0
    index: int = 0


@dataclass
class Call:
    args: Any
    kwargs: Any


@dataclass
class Node:
    """One layer or raw op: its serialized config (no build config) and the calls made on it."""

    name: str
    config: dict
    calls: list[Call]
    is_layer: bool = True
    is_model: bool = False

    @property
    def class_name(self) -> str:
        return self.config["class_name"]

    @property
    def options(self) -> dict:
        return self.config["config"]


@dataclass
class Graph:
    """A model's inputs, nodes in call order, outputs, and (when parsed with shapes) every tensor's shape."""

    name: str
    sequential: bool
    inputs: list[tuple[str, tuple, str]]  # (name, batch_shape, dtype)
    nodes: list[Node]
    outputs: Any  # nested structure of Ref
    shapes: dict[Ref, tuple] = field(default_factory=dict)
    # Lambda layer name -> its live function and arguments: `build` makes the Lambda from them,
    # since loading its config back is (rightly) refused by Keras's safe mode. Python objects
    # of the user's, not Keras ones.
    lambdas: dict[str, dict] = field(default_factory=dict, repr=False, compare=False)
    flattened: list[str] = field(default_factory=list)  # nested models whose layers were inlined
    kept_nested: dict[str, str] = field(default_factory=dict)  # nested model -> why it stayed one node

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def output_refs(self) -> list[Ref]:
        return [r for r in keras.tree.flatten(self.outputs)] if not isinstance(self.outputs, Ref) else [self.outputs]

    def consumers(self) -> dict[Ref, list[str]]:
        """Each tensor's consumers (node names, once per call)."""
        users: dict[Ref, list[str]] = {}
        for node in self.nodes:
            for call in node.calls:
                for ref in tensor_refs(call):
                    users.setdefault(ref, []).append(node.name)
        return users

    def layer_consumers(self) -> dict[str, list[str]]:
        """Per node or input name, who consumes any of its outputs; `OUTPUT` marks a model output."""
        users: dict[str, list[str]] = {}
        for ref, names in self.consumers().items():
            users.setdefault(ref.layer, []).extend(names)
        for ref in self.output_refs():
            users.setdefault(ref.layer, []).append(OUTPUT)
        return users


OUTPUT = "__output__"


def tensor_refs(call: Call) -> list[Ref]:
    return [r for r in _leaves((call.args, call.kwargs)) if isinstance(r, Ref)]


def _leaves(structure):
    if isinstance(structure, Ref):
        yield structure
    elif isinstance(structure, dict):
        for value in structure.values():
            yield from _leaves(value)
    elif isinstance(structure, (list, tuple)):
        for value in structure:
            yield from _leaves(value)
    else:
        yield structure


def _map(structure, fn: Callable[[Ref], Any]):
    if isinstance(structure, Ref):
        return fn(structure)
    if isinstance(structure, dict):
        return {k: _map(v, fn) for k, v in structure.items()}
    if isinstance(structure, list):
        return [_map(v, fn) for v in structure]
    if isinstance(structure, tuple):
        return tuple(_map(v, fn) for v in structure)
    return structure


def _refs_from_config(structure):
    """Replaces serialized `__keras_tensor__` entries with Refs."""
    if isinstance(structure, dict):
        if structure.get("class_name") == "__keras_tensor__":
            layer, call, index = structure["config"]["keras_history"]
            return Ref(layer, call, index)
        return {k: _refs_from_config(v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [_refs_from_config(v) for v in structure]
    return structure


def _history_to_refs(spec):
    """`input_layers`/`output_layers` entries: [name, call, index] or nested lists of them."""
    if isinstance(spec, dict):
        return {k: _history_to_refs(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)) and len(spec) == 3 and isinstance(spec[0], str):
        return Ref(spec[0], int(spec[1]), int(spec[2]))
    return [_history_to_refs(s) for s in spec]


def _strip(layer_config: dict) -> dict:
    config = {k: v for k, v in layer_config.items() if k not in ("build_config", "inbound_nodes", "name", "compile_config")}
    return copy.deepcopy(config)


def parse(model: keras.Model, *, shapes: bool = True, flatten: bool = False) -> Graph:
    """The graph of a built Sequential or functional model (see `check_graph_model`).

    With `shapes`, one symbolic pass records every tensor's shape in `graph.shapes`.
    With `flatten`, nested Sequential/functional models are inlined (see `_inline`);
    `build` then makes a flat functional model, and `graph.flattened` names them.
    """
    config = model.get_config()
    if isinstance(model, keras.Sequential):
        layers = config["layers"]
        if layers and layers[0]["class_name"] == "InputLayer":
            first = layers.pop(0)["config"]
            inputs = [(first["name"], tuple(first["batch_shape"]), first["dtype"])]
        else:
            tensor = model.inputs[0]
            inputs = [("input", tuple(tensor.shape), tensor.dtype)]
        previous = Ref(inputs[0][0])
        models = {layer.name for layer in model.layers if isinstance(layer, keras.Model)}
        nodes = []
        for layer_config in layers:
            name = layer_config["config"]["name"]
            nodes.append(Node(name, _strip(layer_config), [Call([previous], {})], True, name in models))
            previous = Ref(name)
        graph = Graph(config.get("name", model.name), True, inputs, nodes, previous)
    else:
        raw_ops = {op.name for op in model.operations if not is_layer(op)}
        models = {op.name for op in model.operations if isinstance(op, keras.Model)}
        inputs, nodes = [], []
        for layer_config in config["layers"]:
            name = layer_config["name"]
            if layer_config["class_name"] == "InputLayer":
                c = layer_config["config"]
                inputs.append((name, tuple(c["batch_shape"]), c["dtype"]))
                continue
            calls = [
                Call(_refs_from_config(n["args"]), _refs_from_config(n["kwargs"]))
                for n in layer_config["inbound_nodes"]
            ]
            nodes.append(Node(name, _strip(layer_config), calls, name not in raw_ops, name in models))
        input_refs = _history_to_refs(config["input_layers"])
        order = [r.layer for r in (input_refs if isinstance(input_refs, list) else [input_refs])]
        inputs.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
        graph = Graph(config.get("name", model.name), False, inputs, nodes, _history_to_refs(config["output_layers"]))
    if flatten:
        graph = _inline(graph, model)
    graph.lambdas = live_lambdas(model)
    if shapes:
        build(graph, {}, {}, record_shapes=True)
    return graph


def _inline(graph: Graph, model: keras.Model) -> Graph:
    """`graph` with each nested Sequential/functional model replaced by its own (flattened) layers.

    Call k of a nested model becomes call k of each of its layers, so a model called on
    two inputs (a siamese tower) turns into shared layers. A nested model stays one node
    (the reason in `graph.kept_nested`) when its layer names repeat names already in the
    graph, its call passes arguments other than tensors (`training=False`), or its
    inputs do not match the tensors it is called on.
    """
    nested = {layer.name: layer for layer in model.layers if isinstance(layer, keras.Model)}
    if not nested:
        return graph
    taken = {n.name for n in graph.nodes if not n.is_model} | {name for name, _, _ in graph.inputs}
    alias: dict[Ref, Ref] = {}
    nodes: list[Node] = []
    flattened, kept = [], {}

    def outer(ref: Ref) -> Ref:
        return alias.get(ref, ref)

    for node in graph.nodes:
        calls = [Call(_map(c.args, outer), _map(c.kwargs, outer)) for c in node.calls]
        node = Node(node.name, node.config, calls, node.is_layer, node.is_model)
        sub = nested.get(node.name) if node.is_model else None
        reason = _not_inlinable(node, sub)
        if sub is None or reason:
            if sub is not None:
                kept[node.name] = reason
            nodes.append(node)
            continue
        inner = parse(sub, shapes=False, flatten=True)
        arguments = [tensor_refs(call) for call in node.calls]
        counts = {n.name: len(n.calls) for n in inner.nodes}
        clash = sorted(taken & set(counts))
        if clash:
            kept[node.name] = f"its layer names repeat names outside it ({', '.join(clash[:3])})"
        elif any(len(refs) != len(inner.inputs) for refs in arguments):
            kept[node.name] = f"called on {len(arguments[0])} tensors, made for {len(inner.inputs)} inputs"
        if node.name in kept:
            nodes.append(node)
            continue
        kept.update(inner.kept_nested)

        def local(ref: Ref, k: int, refs: list[Ref]) -> Ref:
            for (name, _, _), argument in zip(inner.inputs, refs):
                if ref.layer == name:
                    return argument
            return Ref(ref.layer, k * counts[ref.layer] + ref.call, ref.index)

        for n in inner.nodes:
            new_calls = [
                Call(_map(c.args, lambda r, k=k, refs=refs: local(r, k, refs)),
                     _map(c.kwargs, lambda r, k=k, refs=refs: local(r, k, refs)))
                for k, refs in enumerate(arguments)
                for c in n.calls
            ]
            nodes.append(Node(n.name, n.config, new_calls, n.is_layer, n.is_model))
        for k, refs in enumerate(arguments):
            for i, ref in enumerate(inner.output_refs()):
                alias[Ref(node.name, k, i)] = local(ref, k, refs)
        taken |= set(counts)
        flattened += [node.name, *inner.flattened]
    outputs = _map(graph.outputs, outer)
    sequential = graph.sequential and not flattened
    return Graph(graph.name, sequential, graph.inputs, nodes, outputs, flattened=flattened, kept_nested=kept)


def _not_inlinable(node: Node, sub) -> str:
    if sub is None:
        return ""
    if not is_graph_model(sub):
        return f"a subclassed model ({type(sub).__name__})"
    if any(v is not None and not isinstance(v, Ref) for call in node.calls for v in _leaves(call.kwargs)):
        return "called with arguments other than tensors (e.g. training=False)"
    return ""


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def layers_by_name(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Every layer of `model` by name, those of nested models included (an outer name wins):
    how the nodes of a flattened graph find the layers whose weights they carry."""
    found: dict[str, keras.layers.Layer] = {}
    for layer in _all_layers(model):
        found.setdefault(layer.name, layer)
    return found


def build(
    graph: Graph,
    configs: dict[str, dict],
    aliases: dict[str, Ref],
    *,
    record_shapes: bool = False,
    after: dict[str, Callable[[Any, Callable[[Ref], Any]], Any]] | None = None,
) -> tuple[keras.Model, dict[str, keras.layers.Layer]]:
    """Rebuilds `graph` as a new model: `configs` replaces layer configs by name,
    `aliases` drops layers (their outputs become the aliased tensor), and
    `after[name](output, tensor_of)` replaces the output of a node's first call
    (`tensor_of(ref)` gives any tensor already built), e.g. to gate a block.

    Returns the model and its new layers (raw ops included) by name, for weight copying.
    """
    tensors: dict[Ref, Any] = {}
    model_inputs = []
    for name, batch_shape, dtype in graph.inputs:
        tensor = keras.Input(batch_shape=batch_shape, dtype=dtype, name=name)
        model_inputs.append(tensor)
        tensors[Ref(name)] = tensor

    def resolve(ref: Ref):
        seen = 0
        while ref.layer in aliases:
            ref = aliases[ref.layer]
            seen += 1
            if seen > len(aliases):
                raise RuntimeError(f"cyclic layer aliases at {ref.layer}")
        return tensors[ref]

    def ready(call: Call) -> bool:
        try:
            _map((call.args, call.kwargs), resolve)
        except KeyError:
            return False
        return True

    layers: dict[str, keras.layers.Layer] = {}
    pending: list[tuple[Node, int, Call]] = []
    for node in graph.nodes:
        if node.name in aliases:
            continue
        layer_config = copy.deepcopy(configs.get(node.name, node.config))
        layer_config["config"]["name"] = node.name
        if node.is_layer and node.name in graph.lambdas and node.name not in configs:
            layer = lambda_from_parts(layer_config["config"], graph.lambdas[node.name])
        elif node.is_layer:
            layer = keras.layers.deserialize(layer_config)
        else:
            layer = keras.saving.deserialize_keras_object(layer_config)
        layers[node.name] = layer
        if graph.sequential and not record_shapes:
            continue  # keras.Sequential calls (and builds) them once below; twice cost a trial 20 ms
        pending += [(node, k, call) for k, call in enumerate(node.calls)]
    # Calls in graph order; a shared layer's later call may wait for a tensor made further on.
    while pending:
        waiting = []
        for node, k, call in pending:
            if not ready(call):
                waiting.append((node, k, call))
                continue
            layer = layers[node.name]
            output = layer(*_map(call.args, resolve), **accepted_keywords(layer, _map(call.kwargs, resolve)))
            if after and node.name in after and k == 0:
                output = after[node.name](output, resolve)
            for i, tensor in enumerate(keras.tree.flatten(output)):
                tensors[Ref(node.name, k, i)] = tensor
                if record_shapes:
                    graph.shapes[Ref(node.name, k, i)] = tuple(tensor.shape)
        if len(waiting) == len(pending):
            raise RuntimeError(f"kstruct cannot order the calls of {', '.join(n.name for n, _, _ in waiting[:3])}")
        pending = waiting
    if record_shapes:
        for name, batch_shape, _ in graph.inputs:
            graph.shapes[Ref(name)] = tuple(batch_shape)
    if graph.sequential:
        kept = [layers[n.name] for n in graph.nodes if n.name in layers]
        name, batch_shape, dtype = graph.inputs[0]
        model = keras.Sequential([keras.Input(batch_shape=batch_shape, dtype=dtype, name=name), *kept], name=graph.name)
    else:
        inputs = model_inputs[0] if len(model_inputs) == 1 else model_inputs
        model = keras.Model(inputs, _map(graph.outputs, resolve), name=graph.name)
    return model, layers
