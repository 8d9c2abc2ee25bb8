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
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import keras
import keras_tuner
import numpy as np

from kstruct import _graph
from kstruct._graph import Node, Ref, Signature, analyze, check_graph_model, copy_compile
from kstruct._graph.channels import WIDTH_LAYERS, kept_positions, slice_weights
from kstruct.engine.settings import OPTIMIZERS, TrainingSettings
from kstruct.engine.training import build_training_state, is_dataset, spec_rows
from kstruct.search.activations import canonical, native_activations

DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)

_ACTIVATION_LAYERS = {"Activation", "ReLU", "LeakyReLU", "ELU"}


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
    in_signature: Signature | None = None
    out_signature: Signature | None = None


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
        training: bool = False,
    ):
        super().__init__(name=f"kstruct_space_{model.name}")
        self.training = bool(training)
        check_graph_model(model, "kstruct.search.space")
        self.width_values = _check_widths(widths)
        self.target = target
        self._compile_fn = compile
        self._source = model  # compile settings only; the space holds data, not layers
        self._compile_config = model.get_compile_config() if model.compiled else None
        self.graph = _graph.parse(model)
        self._weights = {
            n.name: [np.asarray(w) for w in model.get_layer(n.name).get_weights()] if n.is_layer else []
            for n in self.graph.nodes
        }
        self._analyze()
        self.depths = self._find_depths() if depth else []
        self.activations = self._find_activations(activations)
        self._rank_channels()
        self.signature = self._signature(widths, depth, activations) + ("-training" if self.training else "")

    # ----- analysis -------------------------------------------------------------

    def _analyze(self) -> None:
        channels = analyze(self.graph)
        self._groups = channels
        self._signatures = channels.signatures
        self._plans: dict[str, _LayerPlan] = {
            n.name: _LayerPlan(channels.kinds[n.name], channels.in_signatures[n.name], channels.signatures.get(Ref(n.name)))
            for n in self.graph.nodes
        }

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
            group = groups.group(root)
            choices.append(WidthChoice(f"width/{node.name}", group.producers, group.size))
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
            if skip_sig is None or len(skip_sig.groups) != 1 or skip_sig.spatial != 1 or skip_sig.repeats != (1,):
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
            if node.class_name not in _ACTIVATION_LAYERS and self._plans[node.name].kind == "opaque" and node.class_name not in WIDTH_LAYERS:
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
        if self.training:  # how each trial fine-tunes (the batch size is declared in `fit`, where the data is)
            hp.Choice("optimizer", list(OPTIMIZERS), default="adam")
            hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)

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
            if self.graph.node(name).is_layer:  # adapted preprocessing (Normalization) keeps its state
                _graph.carry_state(self._source.get_layer(name), layer)
        self._compile(model)
        if self.training:  # compiled as before, then again with the trial's optimizer and learning rate
            settings = TrainingSettings(optimizer=hp.get("optimizer"), learning_rate=hp.get("learning_rate"))
            source = model.get_compile_config().get("optimizer") if model.compiled else None
            copy_compile(model, model, optimizer=settings.optimizer_config(source, lambda: 1))
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args, **kwargs):
        """Keras Tuner's `HyperModel.fit`, with the trial's batch size for array data (`training=True`),
        as Keras Tuner's maintainers advise for tuning the batch size."""
        if self.training and kwargs.get("batch_size") is not None:
            kwargs["batch_size"] = hp.Choice("batch_size", [16, 32, 64, 128], default=32)
        x, y = kwargs.get("x"), kwargs.get("y")
        if y is not None:  # array data
            build_training_state(model, x, y)
        elif is_dataset(x):  # a tf.data dataset of (x, y) batches; it shuffles itself (Keras warns otherwise)
            kwargs.setdefault("shuffle", False)
            rows = spec_rows(x)
            if rows is not None:
                build_training_state(model, *rows)
        return model.fit(*args, **kwargs)

    def _compile(self, model: keras.Model) -> keras.Model:
        if self._compile_fn is not None:
            self._compile_fn(model)
        elif self._compile_config is not None:
            copy_compile(self._source, model)
        return model

    # ----- per-layer edits -------------------------------------------------------

    def _indices(self, signature: Signature | None, keep: dict[int, np.ndarray]) -> np.ndarray | None:
        """Kept indices along a tensor's last axis, or None when it keeps all (the graph core's rule)."""
        return kept_positions(self._groups, signature, keep)

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
        out = self._indices(plan.out_signature, keep)
        if inp is None and out is None:
            return weights
        return slice_weights(node.class_name, weights, inp, out)

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
    training: bool = False,
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
        training: also search how each trial fine-tunes: optimizer (adam, adamw, sgd with
            Nesterov momentum), learning rate (log scale, 1e-4 to 1e-2) and, for array data,
            batch size (16 to 128).

    Returns:
        A `SearchSpace` (a `keras_tuner.HyperModel`).

    Raises:
        UnsupportedModelError: a subclassed or unbuilt model.
        ValueError: bad widths, an unknown target, a non-native activation.

    Example:

    >>> hypermodel = kstruct.search.space(model, widths=(0.5, 1.0))  # doctest: +SKIP
    >>> hypermodel.build(keras_tuner.HyperParameters()).summary()  # doctest: +SKIP
    """
    return SearchSpace(
        model, widths=widths, depth=depth, activations=activations, target=target, compile=compile, training=training
    )
