"""Groups of coupled channels: the output channels that must be removed together.

Channels flow along the last axis (channels-last only). A Conv/Dense makes a new
group of channels; per-channel layers (BatchNormalization, DepthwiseConv) and
pass-through layers (activations, dropout, pooling, elementwise raw ops with a
scalar) carry their input's groups; an Add (or Subtract, Multiply, ... layer or
raw op) ties the groups of its inputs into one; a Concatenate lays its inputs'
groups side by side; a Flatten repeats them once per spatial position, so the
Dense after it reads each channel at several inputs.

A shared layer (one layer called on several tensors, as in a siamese tower) holds
one set of weights, so the channels its calls read are one group and the channels
its calls make are one group. A nested model is seen through when the graph was
parsed with `flatten=True`.

A node the analysis cannot follow (Reshape, attention, RNNs, custom layers, raw ops
other than elementwise ones) freezes every group it touches, and the reason is kept. So are the model's inputs and outputs: a group that reaches
them is never prunable.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from kstruct._graph.graph import Graph, Node, Ref, build, layers_by_name, tensor_refs
from kstruct._graph.state import carry_state

# Layer classes by how channels flow through them.
WIDTH_LAYERS = {"Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D",
                "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}
_PER_CHANNEL = {"BatchNormalization", "LayerNormalization", "DepthwiseConv1D", "DepthwiseConv2D"}
PASS_LAYERS = {"Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "SpatialDropout1D",
               "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
               "ActivityRegularization", "Identity", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
               "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
               "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
               "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
               "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D"}
MERGE_LAYERS = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
# Raw ops (keras.ops on symbolic tensors) that act elementwise: two tensors merge, one passes through.
_ELEMENTWISE_OPS = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power",
                    "Negative", "Abs", "Square", "Sqrt", "Exp", "Log", "Tanh", "Sigmoid", "Relu", "Relu6",
                    "HardSigmoid", "HardSilu", "Silu", "Gelu", "Elu", "Selu", "Softplus", "LeakyRelu", "Clip"}


@dataclass(frozen=True)
class Member:
    """Where one layer meets a group's channels.

    Attributes:
        layer: the layer's name.
        role: "output": the layer makes these channels (a Conv's filters, a Dense's
            units); "channel": its per-channel weights follow them (BatchNorm gamma,
            a DepthwiseConv's kernel); "input": it reads them (a Conv/Dense input axis).
        axis: the axis of the layer's input ("channel", "input") or output ("output")
            tensor the channels run along.
        start, stop: the range of that axis the group covers, e.g. after a
            Concatenate its offset in the joined tensor.
        multiplier: tensor positions per group channel (a DepthwiseConv with
            depth_multiplier m before: channel c is positions c*m .. c*m+m-1 of the range).
        repeats, stride: after a Flatten, the range repeats `repeats` times, every
            `stride` positions (once per spatial position).
    """

    layer: str
    role: str
    axis: int
    start: int
    stop: int
    multiplier: int = 1
    repeats: int = 1
    stride: int = 0


@dataclass
class ChannelGroup:
    """Channels that must change together: remove channel i, and every member loses its channel i.

    Attributes:
        size: channels in the group.
        members: the layers and the channel ranges of each the group covers.
        frozen: True when the group must keep all its channels.
        reasons: why it is frozen (a node the analysis cannot follow, a model output).
    """

    size: int
    members: list[Member] = field(default_factory=list)
    frozen: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def producers(self) -> list[str]:
        """The layers whose output channels (filters/units) make the group."""
        return [m.layer for m in self.members if m.role == "output"]


@dataclass
class Signature:
    """Where a tensor's last-axis channels come from: groups in order, each `size`
    channels of `repeat` positions, tiled `spatial` times by a Flatten (1 when none)."""

    groups: tuple[int, ...]
    sizes: tuple[int, ...]
    spatial: int = 1
    repeats: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.repeats is None:
            self.repeats = (1,) * len(self.groups)

    @property
    def width(self) -> int:
        return sum(s * r for s, r in zip(self.sizes, self.repeats))


class ChannelAnalysis:
    """The channel groups of a parsed graph (see `analyze`), as a union-find with explicit groups.

    Attributes:
        kinds: per node, how channels flow through it: "width", "channel", "pass",
            "merge", "concat", "flatten" or "opaque".
        signatures: per tensor, the groups its channels come from.
        in_signatures: per node, the signature of its first input.
        call_signatures: per node, the signature of each call's first input (a shared layer has several).
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self._parent: list[int] = []
        self._groups: list[ChannelGroup] = []
        self.kinds: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.signatures: dict[Ref, Signature] = {}
        self.in_signatures: dict[str, Signature | None] = {}
        self.call_signatures: dict[str, list[Signature | None]] = {}
        self._run()

    # ----- union-find ----------------------------------------------------------

    def new(self, size: int, member: Member | None = None, frozen_because: str | None = None) -> int:
        self._parent.append(len(self._parent))
        group = ChannelGroup(int(size), [member] if member else [])
        self._groups.append(group)
        if frozen_because:
            self.fix(len(self._parent) - 1, frozen_because)
        return len(self._parent) - 1

    def find(self, g: int) -> int:
        while self._parent[g] != g:
            self._parent[g] = self._parent[self._parent[g]]
            g = self._parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self._parent[b] = a
        ga, gb = self._groups[a], self._groups[b]
        ga.frozen = ga.frozen or gb.frozen
        ga.members += gb.members
        ga.reasons += [r for r in gb.reasons if r not in ga.reasons]

    def fix(self, g: int, reason: str) -> None:
        group = self._groups[self.find(g)]
        group.frozen = True
        if reason not in group.reasons:
            group.reasons.append(reason)

    def is_fixed(self, g: int) -> bool:
        return self._groups[self.find(g)].frozen

    def group(self, g: int) -> ChannelGroup:
        return self._groups[self.find(g)]

    def groups(self) -> list[ChannelGroup]:
        """Every group with at least one layer in it, in graph order of their first member."""
        return [self._groups[g] for g in range(len(self._parent)) if self.find(g) == g and self._groups[g].members]

    def prunable(self) -> list[ChannelGroup]:
        """The groups whose channels may be removed: not frozen, made by at least one layer."""
        return [g for g in self.groups() if not g.frozen and g.producers]

    def group_of(self, layer: str) -> ChannelGroup | None:
        """The group of a width layer's output channels."""
        signature = self.signatures.get(Ref(layer))
        if self.kinds.get(layer) != "width" or signature is None:
            return None
        return self.group(signature.groups[0])

    # ----- the walk -----------------------------------------------------------

    def _members(self, node: Node, role: str, signature: Signature) -> None:
        offset = 0
        for g, size, repeat in zip(signature.groups, signature.sizes, signature.repeats):
            stop = offset + size * repeat
            spatial = signature.spatial
            member = Member(node.name, role, -1, offset, stop, repeat, spatial, signature.width if spatial > 1 else 0)
            self.group(g).members.append(member)
            offset = stop

    def _opaque(self, node: Node, reason: str) -> None:
        why = f"{node.name} ({node.class_name}): {reason}"
        self.kinds[node.name] = "opaque"
        self.reasons[node.name] = reason
        for call in node.calls:
            for ref in tensor_refs(call):
                for g in getattr(self.signatures.get(ref), "groups", ()):
                    self.fix(g, why)
        for ref, shape in self.graph.shapes.items():
            if ref.layer == node.name:
                size = shape[-1] if shape and shape[-1] else 0
                self.signatures[ref] = Signature((self.new(size, frozen_because=why),), (size,))

    def _run(self) -> None:
        g = self.graph
        for name, batch_shape, _ in g.inputs:
            size = batch_shape[-1] if len(batch_shape) > 1 and batch_shape[-1] else 0
            self.signatures[Ref(name)] = Signature((self.new(size, frozen_because=f"{name}: a model input"),), (size,))
        for node in g.nodes:
            calls = []
            for call in node.calls:
                refs = tensor_refs(call)
                calls.append((refs, [self.signatures[r] for r in refs if r in self.signatures]))
            self.in_signatures[node.name] = calls[0][1][0] if calls and calls[0][1] else None
            self.call_signatures[node.name] = [sigs[0] if sigs else None for _, sigs in calls]
            kind, reason = _kind(node, g)
            if kind != "opaque":
                kind, reason = self._check(node, kind, calls)
            if kind == "opaque":
                self._opaque(node, reason)
                continue
            self.kinds[node.name] = kind
            if kind in ("width", "channel"):
                self._weighted(node, kind, [sigs[0] for _, sigs in calls])
                continue
            for k, (inputs, in_sigs) in enumerate(calls):
                if not self._call(node, kind, k, inputs, in_sigs):
                    break
        for ref in g.output_refs():
            for group in self.signatures[ref].groups:
                self.fix(group, f"{ref.layer}: a model output")

    def _check(self, node: Node, kind: str, calls: list) -> tuple[str, str]:
        """`kind`, or "opaque" and why when the node's calls do not fit it."""
        g = self.graph
        for k, (inputs, in_sigs) in enumerate(calls):
            if kind in ("width", "channel", "pass", "flatten") and len(in_sigs) != 1:
                return "opaque", f"{len(in_sigs)} tensor inputs"
            if kind in ("channel", "pass") and g.shapes.get(Ref(node.name, k), (0,))[-1:] != g.shapes[inputs[0]][-1:]:
                if not (node.class_name.startswith("DepthwiseConv") and kind == "channel"):
                    return "opaque", "changes the number of channels"
        if kind in ("width", "channel") and len(calls) > 1:
            first = calls[0][1][0]
            for _, (s,) in calls[1:]:
                if (s.sizes, s.spatial, s.repeats) != (first.sizes, first.spatial, first.repeats):
                    return "opaque", f"a shared layer, called {len(calls)} times on channels that do not line up"
        return kind, ""

    def _weighted(self, node: Node, kind: str, in_sigs: list[Signature]) -> None:
        """A layer with per-channel weights: one set for every call, so a shared layer's calls
        read one group (its inputs' groups are tied) and make one group."""
        s = in_sigs[0]
        for other in in_sigs[1:]:
            for a, b in zip(s.groups, other.groups):
                self.union(a, b)
        if kind == "width":
            size = self.graph.shapes[Ref(node.name)][-1]
            self._members(node, "input", s)
            out = Signature((self.new(size, Member(node.name, "output", -1, 0, size)),), (size,))
        else:
            self._members(node, "channel", s)
            multiplier = int(node.options.get("depth_multiplier", 1)) if node.class_name.startswith("Depthwise") else 1
            out = s
            if multiplier != 1:
                if s.spatial != 1:
                    self._opaque(node, "depthwise convolution of flattened channels")
                    return
                out = Signature(s.groups, s.sizes, 1, tuple(r * multiplier for r in s.repeats))
        for k in range(len(in_sigs)):
            self.signatures[Ref(node.name, k)] = out

    def _call(self, node: Node, kind: str, k: int, inputs: list[Ref], in_sigs: list[Signature]) -> bool:
        """Call `k` of a layer without weights; False when it turned the node opaque."""
        g, out = self.graph, Ref(node.name, k)
        if kind == "pass":
            self.signatures[out] = in_sigs[0]
        elif kind == "flatten":
            s = in_sigs[0]
            spatial_dims = g.shapes[inputs[0]][1:-1]
            if s.spatial != 1 or None in spatial_dims:
                self._opaque(node, "flattens an already flat or unknown-size tensor")
                return False
            self.signatures[out] = Signature(s.groups, s.sizes, math.prod(spatial_dims), s.repeats)
        elif kind == "merge":
            first = in_sigs[0] if in_sigs else None
            compatible = len(in_sigs) == len(inputs) >= 2 and all(
                s.sizes == first.sizes and s.spatial == first.spatial and s.repeats == first.repeats for s in in_sigs
            )
            if not compatible:
                self._opaque(node, "merges tensors whose channels do not line up")
                return False
            for s in in_sigs[1:]:
                for a, b in zip(first.groups, s.groups):
                    self.union(a, b)
            self.signatures[out] = first
        elif kind == "concat":
            axis = node.options.get("axis", -1)
            rank = len(g.shapes[out])
            if axis not in (-1, rank - 1) or len(in_sigs) != len(inputs) or any(s.spatial != 1 for s in in_sigs):
                self._opaque(node, f"concatenates on axis {axis}, not the channel axis")
                return False
            self.signatures[out] = Signature(
                sum((s.groups for s in in_sigs), ()),
                sum((s.sizes for s in in_sigs), ()),
                1,
                sum((s.repeats for s in in_sigs), ()),
            )
        return True


def _kind(node: Node, graph: Graph) -> tuple[str, str]:
    """How channels flow through `node`, and why not when they cannot be followed."""
    cls, opts = node.class_name, node.options
    if node.is_model:
        why = graph.kept_nested.get(node.name)
        return "opaque", f"a nested model kstruct cannot open: {why}" if why else "a nested model (analyze it on its own)"
    if not node.calls:
        return "opaque", "never called"
    if not node.is_layer:
        if cls in _ELEMENTWISE_OPS:
            tensors = tensor_refs(node.calls[0])
            return ("pass", "") if len(tensors) == 1 else ("merge", "")
        return "opaque", "a raw op that is not elementwise"
    channels_last = opts.get("data_format", "channels_last") == "channels_last"
    if not channels_last:
        return "opaque", "channels_first"
    if cls in WIDTH_LAYERS:
        if opts.get("groups", 1) != 1:
            return "opaque", f"grouped convolution (groups={opts['groups']})"
        return "width", ""
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return "channel", ""
    if cls in ("BatchNormalization", "LayerNormalization"):
        axis = opts.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if axis in (-1, len(graph.shapes[tensor_refs(node.calls[0])[0]]) - 1):
            return "channel", ""
        return "opaque", f"normalizes over axis {axis}, not the channel axis"
    if cls in PASS_LAYERS:
        if cls == "Softmax" and opts.get("axis", -1) != -1:
            return "opaque", "softmax over another axis"
        return "pass", ""
    if cls in MERGE_LAYERS:
        return "merge", ""
    if cls == "Concatenate":
        return "concat", ""
    if cls == "Flatten":
        return "flatten", ""
    return "opaque", "kstruct cannot follow channels through this layer"


def analyze(graph: Graph) -> ChannelAnalysis:
    """The channel groups of `graph` (parsed with shapes)."""
    return ChannelAnalysis(graph)


# ----- surgery: a model with fewer channels -----------------------------------------


def member_positions(member: Member, channels: int) -> np.ndarray:
    """The positions along a member's axis that hold each group channel: shape (channels, k).

    Channel c sits at `start + c * multiplier + j` (j < multiplier), once per Flatten
    repeat, `stride` apart.
    """
    base = member.start + np.arange(channels)[:, None] * member.multiplier + np.arange(member.multiplier)[None, :]
    tiles = [base + r * member.stride for r in range(member.repeats)]
    return np.concatenate(tiles, axis=1)


def kept_positions(analysis: ChannelAnalysis, signature: Signature | None, keep: dict) -> np.ndarray | None:
    """Kept positions along a tensor's last axis, given kept channels per group root; None when all stay."""
    if signature is None:
        return None
    parts, offset, changed = [], 0, False
    for group, size, repeat in zip(signature.groups, signature.sizes, signature.repeats):
        kept = keep.get(analysis.find(group))
        if kept is None or len(kept) == size:
            kept = np.arange(size)
        else:
            changed = True
        parts.append((np.asarray(kept)[:, None] * repeat + np.arange(repeat)[None, :]).reshape(-1) + offset)
        offset += size * repeat
    if not changed:
        return None
    base = np.concatenate(parts)
    if signature.spatial == 1:
        return base
    return (np.arange(signature.spatial)[:, None] * offset + base[None, :]).reshape(-1)


def _take(array, indices, axis: int):
    return array if indices is None else np.take(array, indices, axis=axis)


def slice_weights(class_name: str, weights: list, inputs, outputs) -> list:
    """A layer's weights keeping input positions `inputs` and output positions `outputs` (None: all)."""
    if class_name.startswith("SeparableConv"):
        depthwise, pointwise, *rest = weights
        multiplier = depthwise.shape[-1]
        expanded = None if inputs is None else (inputs[:, None] * multiplier + np.arange(multiplier)).reshape(-1)
        pointwise = _take(_take(pointwise, expanded, -2), outputs, -1)
        return [_take(depthwise, inputs, -2), pointwise] + [_take(b, outputs, 0) for b in rest]
    if class_name.startswith("Depthwise"):
        kernel, *rest = weights
        return [_take(kernel, inputs, -2)] + [_take(b, outputs, 0) for b in rest]
    if class_name in ("BatchNormalization", "LayerNormalization"):
        return [_take(w, inputs, -1) for w in weights]
    kernel, *rest = weights
    if class_name.endswith("Transpose"):
        return [_take(_take(kernel, inputs, -1), outputs, -2)] + [_take(b, outputs, 0) for b in rest]
    return [_take(_take(kernel, inputs, -2), outputs, -1)] + [_take(b, outputs, 0) for b in rest]


def narrow(model, graph: Graph, analysis: ChannelAnalysis, keep: dict):
    """Rebuilds `model` (parsed as `graph`) keeping, per group root in `keep`, those channel indices.

    Width layers get fewer filters/units, and every member's weights are sliced to
    match; the original model is not modified. A graph parsed with `flatten=True`
    gives a flat functional model (its nested models' layers at the top level). Returns the new model and its layers by name.
    """
    keep = {analysis.find(g): np.sort(np.asarray(k)) for g, k in keep.items()}
    configs, weights, originals = {}, {}, layers_by_name(model)
    for node in graph.nodes:
        if not node.is_layer:
            continue
        values = [np.asarray(w) for w in originals[node.name].get_weights()]
        kind = analysis.kinds.get(node.name)
        if kind in ("width", "channel") and values:
            inputs = kept_positions(analysis, analysis.in_signatures[node.name], keep)
            outputs = kept_positions(analysis, analysis.signatures.get(Ref(node.name)), keep)
            if kind == "width" and outputs is not None:
                config = copy.deepcopy(node.config)
                config["config"]["units" if node.class_name == "Dense" else "filters"] = len(outputs)
                configs[node.name] = config
            if inputs is not None or outputs is not None:
                values = slice_weights(node.class_name, values, inputs, outputs)
        weights[node.name] = values
    new_model, layers = build(graph, configs, {})
    for name, layer in layers.items():
        if weights.get(name):
            layer.set_weights(weights[name])
        if name in originals:
            carry_state(originals[name], layer)
    return new_model, layers
