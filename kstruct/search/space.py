"""A Keras Tuner search space derived from a model: widths, depth and activations.

`space(model)` returns a `keras_tuner.HyperModel` whose `build(hp)` rebuilds the
model with, per choice:

- width: a multiplier of `filters`/`units` per prunable layer (never the output
  layer). Layers whose outputs meet in an Add (or Multiply, Subtract, ...) share one
  choice, since their channels must line up; Concatenate needs no tie.
- depth: a block whose input and output shapes match (the branch of a residual
  Add, or a shape-preserving layer with its BatchNorm/activation in a chain) may
  be dropped.
- activation: per activation site, one of those the target runs natively.

The original weights are reused: a layer whose shape a choice keeps gets its
weights as they were; a narrower layer keeps the filters of largest L1 norm
(summed over the layers of a tied group), and the layers after it keep the
matching input channels. Models are compiled as the original was.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras
import keras_tuner
import numpy as np

from kstruct.model_graph import check_graph_model, copy_compile
from kstruct.search import _graph
from kstruct.search._graph import Graph, Node, Ref
from kstruct.search.activations import canonical, native_activations

DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)

# Layer classes by how channels flow through them (channels-last only).
_WIDTH = {"Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D",
          "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}
_PER_CHANNEL = {"BatchNormalization", "LayerNormalization", "DepthwiseConv1D", "DepthwiseConv2D"}
_PASS = {"Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
         "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
         "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
         "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
         "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
         "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D"}
_MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
_ACTIVATION_LAYERS = {"Activation", "ReLU", "LeakyReLU", "ELU"}


@dataclass
class _Signature:
    """Where a tensor's last-axis channels come from: groups in order, and the
    spatial positions folded into it by a Flatten (1 when none)."""

    groups: tuple[int, ...]
    sizes: tuple[int, ...]
    spatial: int = 1


class _Groups:
    """Union-find over channel groups; a fixed group keeps all its channels."""

    def __init__(self):
        self.parent: list[int] = []
        self.fixed: list[bool] = []
        self.size: list[int] = []
        self.members: list[list[str]] = []  # width layers producing the group

    def new(self, size: int, fixed: bool, member: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.fixed.append(fixed)
        self.size.append(int(size))
        self.members.append([member] if member else [])
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self.parent[b] = a
        self.fixed[a] = self.fixed[a] or self.fixed[b]
        self.members[a] += self.members[b]

    def fix(self, g: int) -> None:
        self.fixed[self.find(g)] = True

    def is_fixed(self, g: int) -> bool:
        return self.fixed[self.find(g)]


@dataclass
class WidthChoice:
    """One width hyperparameter: the layers (a tied group) whose filters/units it scales."""

    name: str
    layers: list[str]
    channels: int


@dataclass
class DepthChoice:
    """One depth hyperparameter: a block that may be dropped, its output replaced by `skip`."""

    name: str
    layers: list[str]
    skip: Ref
    kind: str  # "residual" or "chain"


@dataclass
class ActivationChoice:
    name: str
    layer: str
    original: str
    choices: tuple[str, ...]


@dataclass
class _LayerPlan:
    kind: str
    in_signature: _Signature | None = None
    out_signature: _Signature | None = None
    weights: list[np.ndarray] = field(default_factory=list)


def _kind(node: Node, graph: Graph) -> str:
    cls, opts = node.class_name, node.options
    if len(node.calls) != 1:
        return "opaque"  # a shared layer: its channels must fit every call
    channels_last = opts.get("data_format", "channels_last") == "channels_last"
    if cls in _WIDTH:
        if not channels_last or opts.get("groups", 1) != 1:
            return "opaque"
        return "width"
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return "channel" if channels_last and opts.get("depth_multiplier", 1) == 1 else "opaque"
    if cls == "BatchNormalization":
        return "channel" if opts.get("axis", -1) in (-1, len(graph.shapes[_first_input(node)]) - 1) else "opaque"
    if cls == "LayerNormalization":
        axis = opts.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        return "channel" if axis in (-1, len(graph.shapes[_first_input(node)]) - 1) else "opaque"
    if cls in _PASS:
        if not channels_last or (cls == "Softmax" and opts.get("axis", -1) != -1):
            return "opaque"
        return "pass"
    if cls in _MERGE:
        return "merge"
    if cls == "Concatenate":
        return "concat"
    if cls == "Flatten":
        return "flatten" if channels_last else "opaque"
    return "opaque"


def _first_input(node: Node) -> Ref:
    return _graph.tensor_refs(node.calls[0])[0]


def _activation_name(node: Node) -> str | None:
    """The activation a node applies, in the search's names, or None when not a site."""
    cls, opts = node.class_name, node.options
    if cls == "ReLU":
        if opts.get("negative_slope", 0) or opts.get("threshold", 0):
            return None
        max_value = opts.get("max_value")
        return "relu" if max_value is None else ("relu6" if float(max_value) == 6.0 else None)
    if cls == "LeakyReLU":
        return "leaky_relu"
    if cls == "ELU":
        return "elu" if float(opts.get("alpha", 1.0)) == 1.0 else None
    activation = opts.get("activation")
    if isinstance(activation, str) and activation not in ("linear", "softmax", "log_softmax"):
        return canonical(activation)
    return None


class SearchSpace(keras_tuner.HyperModel):
    """The space of structures derived from one model; see `space()`.

    Attributes:
        widths: the width hyperparameters (one per tied group of layers).
        depths: the blocks that may be dropped.
        activations: the activation sites and their choices.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        widths: Sequence[float] = DEFAULT_WIDTHS,
        depth: bool = True,
        activations: Sequence[str] | bool | None = None,
        target: str = "int8",
        compile: Callable[[keras.Model], Any] | None = None,
    ):
        super().__init__(name=f"kstruct_space_{model.name}")
        check_graph_model(model, "kstruct.search.space")
        self.width_values = _check_widths(widths)
        self.target = target
        self._compile_fn = compile
        self._source = model  # compile settings only; the space holds data, not layers
        self._compile_config = model.get_compile_config() if model.compiled else None
        self.graph = _graph.parse(model)
        self._weights = {n.name: [np.asarray(w) for w in model.get_layer(n.name).get_weights()] for n in self.graph.nodes}
        self._analyze()
        self.depths = self._find_depths() if depth else []
        self.activations = self._find_activations(activations)
        self._rank_channels()
        self.signature = self._signature(widths, depth, activations)

    # ----- analysis -------------------------------------------------------------

    def _analyze(self) -> None:
        g = self.graph
        groups = _Groups()
        signatures: dict[Ref, _Signature] = {}
        self._plans: dict[str, _LayerPlan] = {}
        for name, batch_shape, _ in g.inputs:
            size = batch_shape[-1] if len(batch_shape) > 1 and batch_shape[-1] else 0
            signatures[Ref(name)] = _Signature((groups.new(size, True),), (size,))

        def opaque_outputs(node: Node) -> None:
            for k, call in enumerate(node.calls):
                for ref in _graph.tensor_refs(call):
                    if ref in signatures:
                        for grp in signatures[ref].groups:
                            groups.fix(grp)
            for ref, shape in g.shapes.items():
                if ref.layer == node.name:
                    size = shape[-1] if shape and shape[-1] else 0
                    signatures[ref] = _Signature((groups.new(size, True),), (size,))

        for node in g.nodes:
            kind = _kind(node, g)
            inputs = _graph.tensor_refs(node.calls[0]) if node.calls else []
            in_sigs = [signatures[r] for r in inputs if r in signatures]
            out = Ref(node.name)
            if kind in ("width", "channel", "pass", "flatten") and len(in_sigs) != 1:
                kind = "opaque"
            if kind in ("channel", "pass") and g.shapes.get(out, (0,))[-1:] != g.shapes[inputs[0]][-1:]:
                kind = "opaque"
            if kind == "width":
                size = g.shapes[out][-1]
                signatures[out] = _Signature((groups.new(size, False, node.name),), (size,))
            elif kind in ("channel", "pass"):
                signatures[out] = in_sigs[0]
            elif kind == "flatten":
                s = in_sigs[0]
                spatial = math.prod(d for d in g.shapes[inputs[0]][1:-1]) if s.spatial == 1 else None
                if spatial is None or None in g.shapes[inputs[0]][1:-1]:
                    kind = "opaque"
                else:
                    signatures[out] = _Signature(s.groups, s.sizes, spatial)
            elif kind == "merge":
                first = in_sigs[0] if in_sigs else None
                compatible = len(in_sigs) == len(inputs) >= 2 and all(
                    s.sizes == first.sizes and s.spatial == first.spatial for s in in_sigs
                )
                if compatible:
                    for s in in_sigs[1:]:
                        for a, b in zip(first.groups, s.groups):
                            groups.union(a, b)
                    signatures[out] = first
                else:
                    kind = "opaque"
            elif kind == "concat":
                axis = node.options.get("axis", -1)
                rank = len(g.shapes[out])
                if axis in (-1, rank - 1) and len(in_sigs) == len(inputs) and all(s.spatial == 1 for s in in_sigs):
                    signatures[out] = _Signature(
                        sum((s.groups for s in in_sigs), ()), sum((s.sizes for s in in_sigs), ())
                    )
                else:
                    kind = "opaque"
            if kind == "opaque":
                opaque_outputs(node)
            self._plans[node.name] = _LayerPlan(kind, in_sigs[0] if in_sigs else None, signatures.get(out))

        for ref in g.output_refs():
            for grp in signatures[ref].groups:
                groups.fix(grp)
        self._groups = groups
        self._signatures = signatures

    def _width_choices(self) -> list[WidthChoice]:
        groups, seen, choices = self._groups, set(), []
        for node in self.graph.nodes:
            plan = self._plans[node.name]
            if plan.kind != "width":
                continue
            root = groups.find(plan.out_signature.groups[0])
            if root in seen or groups.is_fixed(root):
                continue
            seen.add(root)
            choices.append(WidthChoice(f"width/{node.name}", list(groups.members[root]), groups.size[root]))
        return choices

    @property
    def widths(self) -> list[WidthChoice]:
        return self._width_choices()

    def _find_depths(self) -> list[DepthChoice]:
        g = self.graph
        users = g.consumers()
        outputs = set(g.output_refs())
        producers = {n.name: n for n in g.nodes}
        choices: list[DepthChoice] = []
        in_block: set[str] = set()

        # Residual blocks: Add(skip, branch) where the branch starts from skip alone.
        for node in g.nodes:
            if node.class_name != "Add" or self._plans[node.name].kind != "merge" or len(node.calls) != 1:
                continue
            ins = _graph.tensor_refs(node.calls[0])
            if len(ins) != 2 or g.shapes[Ref(node.name)] != g.shapes[ins[0]] or g.shapes[ins[0]] != g.shapes[ins[1]]:
                continue
            for skip, branch in ((ins[0], ins[1]), (ins[1], ins[0])):
                block = self._branch(skip, branch, producers, users, outputs, node.name)
                if block:
                    choices.append(DepthChoice(f"keep/{node.name}", block + [node.name], skip, "residual"))
                    in_block.update(block)
                    break

        # Chain blocks: a shape-preserving width layer with its per-channel followers.
        for node in g.nodes:
            plan = self._plans[node.name]
            if plan.kind != "width" or node.name in in_block:
                continue
            skip = _first_input(node)
            block, current = [node.name], Ref(node.name)
            while current not in outputs and len(users.get(current, [])) == 1:
                follower = producers[users[current][0]]
                if self._plans[follower.name].kind not in ("channel", "pass") or follower.class_name.startswith(
                    ("Global", "MaxPool", "AveragePool", "ZeroPad", "Crop", "UpSampl")
                ):
                    break
                block.append(follower.name)
                current = Ref(follower.name)
            if current in outputs or g.shapes[current] != g.shapes[skip]:
                continue
            skip_sig = self._signatures.get(skip)
            if skip_sig is None or len(skip_sig.groups) != 1 or skip_sig.spatial != 1:
                continue
            # Dropping the block must not change the width downstream: tie it to its input.
            self._groups.union(skip_sig.groups[0], plan.out_signature.groups[0])
            choices.append(DepthChoice(f"keep/{node.name}", block, skip, "chain"))
        return choices

    def _branch(self, skip, branch, producers, users, outputs, add_name) -> list[str] | None:
        if branch.layer not in producers or branch == skip:
            return None
        seen, stack = [], [branch.layer]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            node = producers.get(name)
            if node is None or len(node.calls) != 1:
                return None  # reached a model input other than skip, or a shared layer
            seen.append(name)
            for ref in _graph.tensor_refs(node.calls[0]):
                if ref != skip:
                    stack.append(ref.layer)
        for name in seen:
            for ref in [r for r in self.graph.shapes if r.layer == name]:
                if ref in outputs or any(u not in seen and u != add_name for u in users.get(ref, [])):
                    return None
        order = [n.name for n in self.graph.nodes]
        return sorted(seen, key=order.index)

    def _find_activations(self, activations) -> list[ActivationChoice]:
        if activations is False:
            return []
        native = native_activations(self.target)
        if activations is None or activations is True:
            allowed = native
        else:
            allowed = tuple(canonical(a) for a in activations)
            foreign = [a for a in allowed if a not in native]
            if foreign:
                raise ValueError(
                    f"Activations {foreign} do not run natively on target={self.target!r} "
                    f"(it would run them in float on the CPU). Natively: {list(native)}"
                )
        outputs = {r.layer for r in self.graph.output_refs()}
        sites = []
        for node in self.graph.nodes:
            name = _activation_name(node)
            if name is None or node.name in outputs:
                continue
            if node.class_name not in _ACTIVATION_LAYERS and self._plans[node.name].kind == "opaque" and node.class_name not in _WIDTH:
                continue
            choices = tuple(dict.fromkeys(([name] if name in allowed else []) + list(allowed)))
            if len(choices) > 1:
                sites.append(ActivationChoice(f"activation/{node.name}", node.name, name, choices))
        return sites

    def _rank_channels(self) -> None:
        """Per group, channel indices from largest to smallest summed (normalized) L1 norm."""
        self._rank: dict[int, np.ndarray] = {}
        for choice in self._width_choices():
            total = np.zeros(choice.channels)
            for name in choice.layers:
                norms = _filter_l1(self.graph.node(name), self._weights[name])
                if norms is not None and norms.shape == total.shape:
                    total += norms / (norms.mean() or 1.0)
            root = self._groups.find(self._plans[choice.layers[0]].out_signature.groups[0])
            self._rank[root] = np.argsort(-total, kind="stable")

    def _signature(self, widths, depth, activations) -> str:
        text = json.dumps(
            [self.graph.name, [n.config for n in self.graph.nodes], list(widths), depth,
             None if activations in (None, True, False) else list(activations), activations is False, self.target],
            sort_keys=True, default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ----- keras tuner ----------------------------------------------------------

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        for choice in self._width_choices():
            hp.Choice(choice.name, self.width_values, default=max(self.width_values))
        for choice in self.depths:
            hp.Boolean(choice.name, default=True)
        for choice in self.activations:
            hp.Choice(choice.name, list(choice.choices), default=choice.choices[0])

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        self.declare_hyperparameters(hp)
        keep: dict[int, np.ndarray] = {}
        for choice in self._width_choices():
            root = self._groups.find(self._plans[choice.layers[0]].out_signature.groups[0])
            n = max(1, int(round(choice.channels * hp.get(choice.name))))
            keep[root] = np.sort(self._rank[root][:n])
        aliases = {}
        for choice in self.depths:
            if not hp.get(choice.name):
                for name in choice.layers:
                    aliases[name] = choice.skip
        activation = {c.layer: hp.get(c.name) for c in self.activations}
        configs = {}
        for node in self.graph.nodes:
            config = self._config_for(node, keep, activation.get(node.name))
            if config is not node.config:
                configs[node.name] = config
        model, layers = _graph.build(self.graph, configs, aliases)
        for name, layer in layers.items():
            weights = self._weights_for(self.graph.node(name), keep)
            if weights:
                layer.set_weights(weights)
        return self._compile(model)

    def _compile(self, model: keras.Model) -> keras.Model:
        if self._compile_fn is not None:
            self._compile_fn(model)
        elif self._compile_config is not None:
            try:
                # Not compile_from_config, which also creates the optimizer's slots: as
                # with any compile(), `fit` creates them, and a trial over budget never does.
                model.compile(**keras.saving.deserialize_keras_object(self._compile_config))
            except Exception:  # a loss or metric that does not deserialize: reuse the objects
                copy_compile(self._source, model)
        return model

    # ----- per-layer edits -------------------------------------------------------

    def _indices(self, signature: _Signature | None, keep: dict[int, np.ndarray]) -> np.ndarray | None:
        """Kept indices along a tensor's last axis, or None when it keeps all."""
        if signature is None:
            return None
        parts, offset, changed = [], 0, False
        for grp, size in zip(signature.groups, signature.sizes):
            kept = keep.get(self._groups.find(grp))
            if kept is None or len(kept) == size:
                parts.append(np.arange(size) + offset)
            else:
                parts.append(kept + offset)
                changed = True
            offset += size
        if not changed:
            return None
        base = np.concatenate(parts)
        if signature.spatial == 1:
            return base
        return (np.arange(signature.spatial)[:, None] * offset + base[None, :]).reshape(-1)

    def _config_for(self, node: Node, keep, activation: str | None) -> dict:
        plan = self._plans[node.name]
        config = node.config
        if plan.kind == "width":
            out = self._indices(plan.out_signature, keep)
            if out is not None:
                config = _with(config, "units" if node.class_name == "Dense" else "filters", len(out))
        if activation is not None and activation != _activation_name(node):
            if node.class_name in _ACTIVATION_LAYERS:
                config = {
                    "module": "keras.layers",
                    "class_name": "Activation",
                    "config": {"name": node.name, "activation": activation, "trainable": node.options.get("trainable", True),
                               "dtype": node.options.get("dtype")},
                    "registered_name": None,
                }
            else:
                config = _with(config, "activation", activation)
        return config

    def _weights_for(self, node: Node, keep) -> list[np.ndarray]:
        weights = self._weights[node.name]
        plan = self._plans[node.name]
        if not weights or plan.kind in ("opaque", "pass", "merge", "concat", "flatten"):
            return weights
        inp = self._indices(plan.in_signature, keep)
        out = self._indices(plan.out_signature, keep) if plan.kind == "width" else inp
        if inp is None and out is None:
            return weights
        return _slice(node.class_name, weights, inp, out)

    def summary(self) -> str:
        """A few lines: how many choices of each kind, and which layers they cover."""
        lines = [f"search space for {self.graph.name} (target={self.target}):"]
        for c in self._width_choices():
            lines.append(f"  {c.name}: {self.width_values} x {c.channels} channels, layers {c.layers}")
        for c in self.depths:
            lines.append(f"  {c.name}: drop {c.kind} block {c.layers}")
        for c in self.activations:
            lines.append(f"  {c.name}: {list(c.choices)}")
        return "\n".join(lines)


def _with(config: dict, key: str, value) -> dict:
    new = dict(config)
    new["config"] = dict(config["config"])
    new["config"][key] = value
    return new


def _filter_l1(node: Node, weights: list[np.ndarray]) -> np.ndarray | None:
    """L1 norm of each output filter of a width layer."""
    if not weights:
        return None
    cls = node.class_name
    if cls.startswith("SeparableConv"):
        kernel = weights[1]
        return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    kernel = weights[0]
    if cls.endswith("Transpose"):
        return np.abs(np.moveaxis(kernel, -2, -1)).reshape(-1, kernel.shape[-2]).sum(axis=0)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def _take(array: np.ndarray, indices: np.ndarray | None, axis: int) -> np.ndarray:
    return array if indices is None else np.take(array, indices, axis=axis)


def _slice(cls: str, weights: list[np.ndarray], inp, out) -> list[np.ndarray]:
    if cls.startswith("SeparableConv"):
        depthwise, pointwise, *rest = weights
        multiplier = depthwise.shape[-1]
        expanded = None if inp is None else (inp[:, None] * multiplier + np.arange(multiplier)[None, :]).reshape(-1)
        return [_take(depthwise, inp, -2), _take(_take(pointwise, expanded, -2), out, -1)] + [_take(b, out, 0) for b in rest]
    if cls.startswith("Depthwise"):
        kernel, *rest = weights
        return [_take(kernel, inp, -2)] + [_take(b, inp, 0) for b in rest]
    if cls in ("BatchNormalization", "LayerNormalization"):
        return [_take(w, inp, -1) for w in weights]
    kernel, *rest = weights
    if cls.endswith("Transpose"):
        return [_take(_take(kernel, inp, -1), out, -2)] + [_take(b, out, 0) for b in rest]
    return [_take(_take(kernel, inp, -2), out, -1)] + [_take(b, out, 0) for b in rest]


def _check_widths(widths) -> list[float]:
    values = [float(w) for w in widths]
    if not values or any(not 0.0 < w <= 1.0 for w in values):
        raise ValueError(f"Expected `widths` to be multipliers in (0, 1]. Received: widths={tuple(widths)}")
    return sorted(set(values))


def space(
    model: keras.Model,
    widths: Sequence[float] = DEFAULT_WIDTHS,
    depth: bool = True,
    activations: Sequence[str] | bool | None = None,
    target: str = "int8",
    *,
    compile: Callable[[keras.Model], Any] | None = None,
) -> SearchSpace:
    """Derives a Keras Tuner `HyperModel` from a Sequential or functional model.

    Args:
        model: a built Sequential or functional model (nested ones are kept as they
            are); compiled, unless `compile` is given.
        widths: the multipliers a layer's filters/units may take.
        depth: whether blocks with matching input and output shapes may be dropped.
        activations: None: every activation the target runs natively; a list: those
            (each must run natively); False: keep the activations.
        target: the TFLite target whose native activations are allowed.
        compile: a function that compiles a built model; default: compile as `model`.

    Returns:
        A `SearchSpace` (a `keras_tuner.HyperModel`).

    Raises:
        UnsupportedModelError: a subclassed or unbuilt model.
        ValueError: bad widths, an unknown target, a non-native activation.

    Example:

    >>> hypermodel = kstruct.search.space(model, widths=(0.5, 1.0))  # doctest: +SKIP
    >>> hypermodel.build(keras_tuner.HyperParameters()).summary()  # doctest: +SKIP
    """
    return SearchSpace(model, widths=widths, depth=depth, activations=activations, target=target, compile=compile)
