"""Rewriting a tf_keras (Keras 2) model config, as JSON data, into one Keras 3 can build.

Only data is changed here: nothing read from the file is imported or run. The fixes:

- arguments Keras 3 dropped (`groups` of depthwise, separable and transposed convolutions,
  `time_major` of recurrent layers) are removed when they hold the value that changes
  nothing, and refused otherwise (dropping them would silently change the model);
- BatchNormalization's `axis` written as a one-item list becomes the integer Keras 3 expects;
- tfmot's wrappers (`PruneLowMagnitude`, `QuantizeWrapper`, `QuantizeWrapperV2`,
  `QuantizeAnnotate`) become the plain layer they wrap, under the wrapped layer's own name,
  as tfmot's `strip_pruning` names it; tfmot's `QuantizeLayer` (a fake-quant of the input)
  is removed and its consumers read its input; a `QuantizeAwareActivation` becomes the
  activation it wraps.

`rewrite(config)` returns the new config and a `Rewrites` record that the weight loader
uses to drop the wrappers' own variables (masks, steps, quantizer ranges).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

from kstruct.errors import ModelFileError

PRUNE_WRAPPERS = ("PruneLowMagnitude",)
QUANTIZE_WRAPPERS = ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeAnnotate")
QUANTIZE_INPUT = ("QuantizeLayer",)

# Arguments tf_keras wrote that Keras 3 no longer takes, with the value that means "not used".
_DROPPED_ARGUMENTS = {"groups": 1, "time_major": False}


@dataclass
class Rewrites:
    """What `rewrite` changed, by layer name in the file."""

    pruned: dict[str, str] = field(default_factory=dict)  # PruneLowMagnitude name -> wrapped layer's name
    quantized: dict[str, str] = field(default_factory=dict)  # QuantizeWrapper(V2)/Annotate name -> wrapped name
    removed: list[str] = field(default_factory=list)  # QuantizeLayer names

    @property
    def wrapper_names(self) -> set[str]:
        """Names whose variables belong to a tfmot wrapper, not to a Keras layer."""
        return {*self.pruned, *self.quantized, *self.removed}


def _layer_class(class_name: str):
    import keras

    return getattr(keras.layers, class_name, None)


def _accepts(cls, argument: str) -> bool:
    """Whether `cls(...)` takes `argument` by name (its own `__init__`, not the base Layer's **kwargs)."""
    return argument in inspect.signature(cls.__init__).parameters


def _fix_arguments(class_name: str, config: dict) -> None:
    cls = _layer_class(class_name)
    if cls is None:
        return
    for argument, neutral in _DROPPED_ARGUMENTS.items():
        if argument not in config or _accepts(cls, argument):
            continue
        if config[argument] != neutral:
            raise ModelFileError(
                f"layer {config.get('name')!r} ({class_name}) has {argument}={config[argument]!r}, which Keras 3's "
                f"{class_name} does not support; rebuild that layer in Keras 3 and load its weights"
            )
        del config[argument]
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        config["axis"] = config["axis"][0]


def _plain_activation(value: Any) -> Any:
    """The activation a tfmot `QuantizeAwareActivation` (or `NoOpActivation`) stands for."""
    while isinstance(value, dict) and value.get("class_name") in ("QuantizeAwareActivation", "NoOpActivation"):
        value = "linear" if value["class_name"] == "NoOpActivation" else value.get("config", {}).get("activation")
    return value


class _Rewriter:
    def __init__(self):
        self.rewrites = Rewrites()
        # name -> (new name, node index, tensor index) or (new name, None, None) to keep the indices
        self.references: dict[str, tuple[str, int | None, int | None]] = {}

    def layer(self, entry: dict) -> dict | None:
        """One layer entry rewritten; None when the layer is removed (tfmot's QuantizeLayer)."""
        class_name = entry.get("class_name")
        config = entry.get("config")
        if not isinstance(config, dict):
            return entry
        if class_name in QUANTIZE_INPUT:
            self._remove(entry)
            return None
        if class_name in PRUNE_WRAPPERS + QUANTIZE_WRAPPERS:
            entry = self._unwrap(entry)
            class_name, config = entry["class_name"], entry["config"]
        if "activation" in config:
            config["activation"] = _plain_activation(config["activation"])
        _fix_arguments(class_name, config)
        for key in ("layer", "backward_layer", "cell"):  # Bidirectional, TimeDistributed, RNN(cell)
            if isinstance(config.get(key), dict):
                config[key] = self.layer(config[key])
        if isinstance(config.get("cells"), list):
            config["cells"] = [self.layer(cell) for cell in config["cells"]]
        if isinstance(config.get("layers"), list):  # a nested Sequential or functional model
            config["layers"] = [new for new in map(self.layer, config["layers"]) if new is not None]
        return entry

    def _unwrap(self, entry: dict) -> dict:
        wrapper = entry["config"]
        outer_name = wrapper.get("name") or entry.get("name")
        inner = copy.deepcopy(wrapper["layer"])
        inner_name = inner["config"].get("name", outer_name)
        record = self.rewrites.pruned if entry["class_name"] in PRUNE_WRAPPERS else self.rewrites.quantized
        record[outer_name] = inner_name
        if "inbound_nodes" in entry:  # a functional model's entry: keep its wiring, under the inner name
            inner["name"] = inner_name
            inner["inbound_nodes"] = entry["inbound_nodes"]
            self.references[outer_name] = (inner_name, None, None)
        return inner

    def _remove(self, entry: dict) -> None:
        name = entry.get("config", {}).get("name") or entry.get("name")
        self.rewrites.removed.append(name)
        nodes = entry.get("inbound_nodes") or []
        if nodes:  # functional: whoever read this layer reads its input instead
            source = _node_sources(nodes[0])
            if len(source) != 1:
                raise ModelFileError(f"tfmot QuantizeLayer {name!r} has {len(source)} inputs; expected one")
            self.references[name] = source[0]

    def references_in(self, value: Any) -> Any:
        """`value` with every layer reference ([name, node, tensor, ...]) pointed through `references`."""
        if isinstance(value, list):
            if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
                target = self._resolve(value[0])
                if target is not None:
                    name, node, tensor = target
                    return [name, value[1] if node is None else node, value[2] if tensor is None else tensor, *value[3:]]
                return value
            return [self.references_in(item) for item in value]
        if isinstance(value, dict):
            return {key: self.references_in(item) for key, item in value.items()}
        return value

    def _resolve(self, name: str):
        seen, target = set(), None
        while name in self.references and name not in seen:  # a QuantizeLayer fed by a wrapper, etc.
            seen.add(name)
            target = self.references[name]
            name = target[0]
        return target


def _node_sources(node: Any) -> list[tuple[str, int, int]]:
    """The (layer, node, tensor) references a node reads, in the legacy list form or the .keras `keras_history` form."""
    found: list[tuple[str, int, int]] = []
    if isinstance(node, list) and len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
        return [(node[0], node[1], node[2])]
    if isinstance(node, dict):
        history = node.get("keras_history") if "keras_history" in node else None
        if isinstance(history, list) and len(history) == 3:
            return [(history[0], history[1], history[2])]
        for value in node.values():
            found += _node_sources(value)
    elif isinstance(node, list):
        for value in node:
            found += _node_sources(value)
    return found


def _rewire(rewriter: _Rewriter, config: Any) -> Any:
    """Points `inbound_nodes`, `input_layers` and `output_layers` through the rewriter's references."""
    if isinstance(config, list):
        return [_rewire(rewriter, item) for item in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key in ("inbound_nodes", "input_layers", "output_layers"):
            out[key] = rewriter.references_in(value)  # legacy [name, node, tensor, kwargs] or .keras keras_history
        else:
            out[key] = _rewire(rewriter, value)
    return out


def rewrite(model_config: dict) -> tuple[dict, Rewrites]:
    """A tf_keras model config made loadable by Keras 3, and what was changed. The input is not modified.

    Raises:
        ModelFileError: an argument Keras 3 dropped holds a value that matters.
    """
    rewriter = _Rewriter()
    config = rewriter.layer(copy.deepcopy(model_config))
    if rewriter.references:
        config = _rewire(rewriter, config)
    return config, rewriter.rewrites


def has_tfmot_wrappers(model_config: Any) -> list[str]:
    """The tfmot class names anywhere in a config (for files whose weights cannot be remapped)."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("class_name") in PRUNE_WRAPPERS + QUANTIZE_WRAPPERS + QUANTIZE_INPUT:
                names.add(value["class_name"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(model_config)
    return sorted(names)
