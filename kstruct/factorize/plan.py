"""What low-rank factorization does to each layer of a model, decided before any model is built.

`plan(model, rank=... | energy=...)` looks at every Dense, Conv1D, Conv2D and Embedding layer
(those inside nested models included), computes its factors and the cost of the layers that
would replace it, and keeps the factorization only where it pays: fewer multiply-accumulates
for Dense and convolutions, fewer parameters for an Embedding (a lookup costs no MACs, so its
factorized form always costs some). `FactorizationPlan.apply(model)` rebuilds the model through
the graph core with each planned layer replaced by its chain of plain Keras layers; the last
layer of a chain keeps the original's name, bias and activation, so the model's outputs keep
their names and a following BatchNormalization still folds into the layer before it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np

from kstruct._graph import check_graph_model, leaf_layers, parse, rebuild
from kstruct.engine.layer_selection import LayerSelector, select_layers
from kstruct.errors import FactorizationError
from kstruct.factorize.factors import Factors, spatial_split, svd, tucker2

logger = logging.getLogger(__name__)

# Options that belong to the original kernel, not to a factor of it: the layers before the last
# of a chain are plain linear maps without bias, regularizer, constraint or LoRA adapter.
_FACTOR_RESETS = {
    "use_bias": False,
    "activation": "linear",
    "kernel_regularizer": None,
    "kernel_constraint": None,
    "bias_regularizer": None,
    "bias_constraint": None,
    "activity_regularizer": None,
    "embeddings_regularizer": None,
    "embeddings_constraint": None,
    "lora_rank": None,
}


@dataclass
class LayerPlan:
    """One layer's factorization.

    Attributes:
        name: the original layer's name (the last layer of its chain keeps it).
        form: "svd" (Dense, 1x1 convolution, Embedding), "tucker2" or "spatial" (k x 1 then 1 x k).
        factors: the factor kernels and the kernel they multiply back to.
        configs: the configs of the chain's layers, in call order.
        weights: each chain layer's weights, as `set_weights` takes them.
        params: parameters (before, after).
        macs: multiply-accumulates of one sample (before, after).
    """

    name: str
    form: str
    factors: Factors
    configs: list[dict]
    weights: list[list[np.ndarray]]
    params: tuple[int, int]
    macs: tuple[int, int]

    def new_layers(self) -> list[keras.layers.Layer]:
        """Fresh, unbuilt layers of the chain."""
        return [keras.layers.deserialize(config) for config in self.configs]

    def note(self) -> dict[str, Any]:
        """The report's line for this layer (JSON-serializable)."""
        rank = self.factors.rank
        return {
            "form": self.form,
            "rank": list(rank) if isinstance(rank, tuple) else rank,
            "full_rank": list(self.factors.full_rank) if isinstance(self.factors.full_rank, tuple) else self.factors.full_rank,
            "energy": round(self.factors.energy, 6),
            "params": list(self.params),
            "macs": list(self.macs),
        }


@dataclass
class FactorizationPlan:
    """Which layers a factorization replaces and how, and which it leaves alone and why.

    Attributes:
        layers: layer name -> its `LayerPlan`, in model order.
        skipped: layer name -> why it is left as it is.
    """

    layers: dict[str, LayerPlan] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    _by_id: dict[int, LayerPlan] = field(default_factory=dict, repr=False)

    def log(self) -> None:
        """Logs each layer's form and cost, and why a layer is left alone (when the plan is carried out:
        a plan made to check or to measure, as `auto` does, stays quiet)."""
        for name, planned in self.layers.items():
            logger.info("kstruct.factorize: %s as %s, rank %s: params %s -> %s, MACs %s -> %s", name, planned.form,
                        planned.note()["rank"], *planned.params, *planned.macs)
        for name, reason in self.skipped.items():
            logger.info("kstruct.factorize: %s left as it is: %s", name, reason)

    def apply(self, model: keras.Model) -> keras.Model:
        """A copy of `model` (the one this plan was made for) with the planned layers factorized.

        The copy is plain Keras layers, compiled as `model` was; train it with `fit`.
        """

        def replace(layer: keras.layers.Layer):
            planned = self._by_id.get(id(layer))
            if planned is None:
                return layer.__class__.from_config(layer.get_config())
            return planned.new_layers()

        def copy_weights(original: keras.layers.Layer, new) -> None:
            planned = self._by_id.get(id(original))
            if planned is None:
                new.set_weights(original.get_weights())
                return
            for layer, weights in zip(new, planned.weights):
                layer.set_weights(weights)

        return rebuild(model, replace, copy_weights)

    def notes(self) -> dict[str, Any]:
        """Per factorized layer its form, rank and costs; the layers left alone with the reason."""
        return {"factorized": {name: p.note() for name, p in self.layers.items()}, "skipped": dict(self.skipped)}


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


def _positions(shape: tuple, data_format: str = "channels_last") -> int:
    """Positions a layer's kernel is applied at: the product of the dimensions between batch and
    channels (an unknown one counts as 1)."""
    dims = shape[2:] if data_format == "channels_first" else shape[1:-1]
    return int(math.prod(d or 1 for d in dims))


def _config(layer: keras.layers.Layer, **changes) -> dict:
    """A serialized layer config for `keras.layers.deserialize`, with `changes` applied."""
    serialized = keras.layers.serialize(layer)
    serialized["config"] = {**serialized["config"], **changes}
    serialized.pop("build_config", None)
    return serialized


def _factor_config(layer: keras.layers.Layer, **changes) -> dict:
    """The config of a layer before the last of a chain: plain, linear, no bias."""
    options = keras.layers.serialize(layer)["config"]
    resets = {key: value for key, value in _FACTOR_RESETS.items() if key in options}
    return _config(layer, **resets, **changes)


def _as_float(weight) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(weight), dtype=np.float32)


class _Namer:
    """New layer names that no layer of the model has yet."""

    def __init__(self, model: keras.Model):
        self.taken = {layer.name for layer in leaf_layers(model)} | {layer.name for layer in model.layers}

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name


def _bias(layer) -> list[np.ndarray]:
    return [_as_float(layer.bias)] if layer.use_bias else []


def _dense(layer: keras.layers.Dense, rank, energy, namer) -> LayerPlan:
    kernel = _as_float(layer.kernel)
    m, n = kernel.shape
    positions = _positions(_shape(layer.output))
    factors = svd(kernel, rank=rank, energy=energy)
    r = factors.rank
    a, b = factors.kernels
    configs = [_factor_config(layer, name=namer(f"{layer.name}_factor"), units=r), _config(layer)]
    bias = _bias(layer)
    return LayerPlan(
        layer.name, "svd", factors, configs, [[a], [b, *bias]],
        (m * n + len(bias) * n, r * (m + n) + len(bias) * n), (positions * m * n, positions * r * (m + n)),
    )


def _conv(layer, rank, energy, namer) -> LayerPlan:
    if layer.groups != 1:
        raise _Skip(f"a grouped convolution (groups={layer.groups})")
    kernel = _as_float(layer.kernel)
    *size, c_in, c_out = kernel.shape
    data_format = layer.data_format
    p_in, p_out = _positions(_shape(layer.input), data_format), _positions(_shape(layer.output), data_format)
    bias = _bias(layer)
    params_before = kernel.size + len(bias) * c_out
    macs_before = p_out * kernel.size
    point = (1,) * len(size)
    plain = {"kernel_size": point, "strides": point, "padding": "valid", "dilation_rate": point}
    if all(k == 1 for k in size):  # a 1x1 convolution is a Dense applied at every position
        factors = svd(kernel.reshape(c_in, c_out), rank=rank, energy=energy)
        r = factors.rank
        a, b = factors.kernels
        factors.kernels = [a.reshape(*point, c_in, r), b.reshape(*point, r, c_out)]
        factors.approximation = factors.approximation.reshape(kernel.shape)
        configs = [_factor_config(layer, name=namer(f"{layer.name}_factor"), filters=r), _config(layer, **plain)]
        return LayerPlan(layer.name, "svd", factors, configs, [[factors.kernels[0]], [factors.kernels[1], *bias]],
                         (params_before, r * (c_in + c_out) + len(bias) * c_out), (macs_before, p_out * r * (c_in + c_out)))
    candidates = []
    tucker = tucker2(kernel, rank=rank, energy=energy)
    r_in, r_out = tucker.rank
    area = int(math.prod(size))
    candidates.append(LayerPlan(
        layer.name, "tucker2", tucker,
        [
            _factor_config(layer, name=namer(f"{layer.name}_in"), filters=r_in, **plain),
            _factor_config(layer, name=namer(f"{layer.name}_core"), filters=r_out),
            _config(layer, **plain),
        ],
        [[tucker.kernels[0]], [tucker.kernels[1]], [tucker.kernels[2], *bias]],
        (params_before, c_in * r_in + area * r_in * r_out + r_out * c_out + len(bias) * c_out),
        (macs_before, p_in * c_in * r_in + p_out * area * r_in * r_out + p_out * r_out * c_out),
    ))
    if len(size) == 2 and min(size) > 1:
        split = spatial_split(kernel, rank=rank, energy=energy)
        r = split.rank
        (kh, kw), (sh, sw), (dh, dw) = size, layer.strides, layer.dilation_rate
        in_shape, out_shape = _shape(layer.input), _shape(layer.output)
        rows, cols = (1, 2) if data_format == "channels_last" else (2, 3)
        p_mid = (out_shape[rows] or 1) * (in_shape[cols] or 1)  # rows strided by the first, columns by the second
        candidates.append(LayerPlan(
            layer.name, "spatial", split,
            [
                _factor_config(layer, name=namer(f"{layer.name}_vertical"), filters=r, kernel_size=(kh, 1),
                               strides=(sh, 1), dilation_rate=(dh, 1)),
                _config(layer, kernel_size=(1, kw), strides=(1, sw), dilation_rate=(1, dw)),
            ],
            [[split.kernels[0]], [split.kernels[1], *bias]],
            (params_before, kh * c_in * r + kw * r * c_out + len(bias) * c_out),
            (macs_before, p_mid * kh * c_in * r + p_out * kw * r * c_out),
        ))
    return min(candidates, key=lambda p: p.macs[1])


def _embedding(layer: keras.layers.Embedding, rank, energy, namer) -> LayerPlan:
    table = _as_float(layer.embeddings)
    vocabulary, dim = table.shape
    positions = _positions(_shape(layer.output))
    factors = svd(table, rank=rank, energy=energy)
    r = factors.rank
    a, b = factors.kernels
    dtype = keras.layers.serialize(layer)["config"].get("dtype")
    projection = keras.layers.serialize(keras.layers.Dense(dim, use_bias=False, name=layer.name, dtype=dtype))
    projection.pop("build_config", None)
    configs = [_factor_config(layer, name=namer(f"{layer.name}_factor"), output_dim=r), projection]
    return LayerPlan(layer.name, "svd", factors, configs, [[a], [b]],
                     (vocabulary * dim, r * (vocabulary + dim)), (0, positions * r * dim))


class _Skip(Exception):
    """A layer this factorization cannot take, with the reason."""


# Exact classes, not subclasses: a subclass of Dense may compute something else with its kernel.
PLANNERS: dict[type, Callable[..., LayerPlan]] = {
    keras.layers.Dense: _dense,
    keras.layers.Conv1D: _conv,
    keras.layers.Conv2D: _conv,
    keras.layers.Embedding: _embedding,
}


def check_amount(rank: float | None, energy: float | None) -> tuple[float | None, float | None]:
    """Exactly one of `rank` and `energy`, each a number in (0, 1]."""
    if (rank is None) == (energy is None):
        raise ValueError(
            "Expected exactly one of `rank` (the fraction of each layer's full rank kept) and `energy` (the "
            f"fraction of squared singular values kept), e.g. rank=0.25. Received: rank={rank!r}, energy={energy!r}"
        )
    name, value = ("rank", rank) if rank is not None else ("energy", energy)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"Expected `{name}` in (0, 1]. Received: {name}={value!r}")
    return (float(rank), None) if rank is not None else (None, float(energy))


def factorizable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` (nested models opened up) whose class factorization knows."""
    return [layer for layer in leaf_layers(model) if type(layer) in PLANNERS and layer.built]


def _output_layers(model: keras.Model) -> set[str]:
    return {ref.layer for ref in parse(model, shapes=False, flatten=True).output_refs()}


def plan(
    model: keras.Model,
    *,
    rank: float | None = None,
    energy: float | None = None,
    layers: LayerSelector = None,
    only_if_cheaper: bool = True,
) -> FactorizationPlan:
    """Decides, layer by layer, the low-rank form of `model`'s Dense, Conv1D, Conv2D and Embedding layers.

    Args:
        model: a built Sequential or functional model (nested ones included); not modified.
        rank: the fraction of each layer's full rank kept, in (0, 1] (rounded up, at least 1).
        energy: instead of `rank`, the fraction of each layer's squared singular values kept.
        layers: which layers (a name, a regex matched against whole names, a list of those, or a
            predicate). Default: every one except those giving a model output (a classifier's
            logits are few and cheap, and a bottleneck there costs accuracy).
        only_if_cheaper: leave alone a layer whose factorized form costs at least as many MACs
            (for an Embedding: parameters) as it does; False factorizes every selected layer.

    Returns:
        The plan: each factorized layer's form, rank, parameters and MACs before and after, and the
        layers left alone with the reason.

    Raises:
        FactorizationError: the model has no layer that factorization knows.
        ValueError: for a bad `rank`/`energy`, or a `layers` entry that selects nothing.
    """
    check_graph_model(model, "kstruct.factorize")
    rank, energy = check_amount(rank, energy)
    candidates = factorizable_layers(model)
    if not candidates:
        raise FactorizationError(
            f"Model `{model.name}` has no layer low-rank factorization knows (Dense, Conv1D, Conv2D, Embedding)."
        )
    outputs = _output_layers(model) if layers is None else set()
    chosen = {id(layer) for layer in select_layers(candidates, layers, kind="factorizable")}
    namer = _Namer(model)
    result = FactorizationPlan()
    for layer in candidates:
        if id(layer) not in chosen:
            continue
        if layer.name in outputs:
            result.skipped[layer.name] = "gives a model output (name it in layers= to factorize it)"
            continue
        try:
            planned = PLANNERS[type(layer)](layer, rank, energy, namer)
        except _Skip as reason:
            result.skipped[layer.name] = str(reason)
            continue
        cost, what = (planned.params, "parameters") if isinstance(layer, keras.layers.Embedding) else (planned.macs, "MACs")
        if only_if_cheaper and cost[1] >= cost[0]:
            result.skipped[layer.name] = f"its factorized form costs more: {cost[1]:,} {what} against {cost[0]:,}"
            continue
        result.layers[layer.name] = planned
        result._by_id[id(layer)] = planned
    return result


def decompose(
    model: keras.Model,
    *,
    rank: float | None = None,
    energy: float | None = None,
    layers: LayerSelector = None,
    only_if_cheaper: bool = True,
) -> keras.Model:
    """Returns a copy of `model` with its Dense, Conv1D, Conv2D and Embedding layers low-rank factorized.

    - Dense: truncated SVD, `Dense(r, use_bias=False)` then `Dense(n)` with the original bias and activation.
    - Conv2D k x k: Tucker-2 (1x1 to r_in channels, k x k core to r_out, 1x1 to the output channels) or
      the spatial split (k x 1 to r channels, then 1 x k), whichever costs fewer MACs; a 1x1
      convolution as a Dense; Conv1D likewise (Tucker-2).
    - Embedding: an Embedding of width r, then `Dense(dim, use_bias=False)`.

    At full rank (`rank=1.0`, with `only_if_cheaper=False`) the copy computes what `model` does. See
    `plan` for the arguments; `plan(...).notes()` says what was done to each layer.

    Returns:
        A new model of plain Keras layers, compiled as `model` was if it was: train it with `fit`.

    Example:
        small = kstruct.factorize.decompose(model, rank=0.25)
        small.fit(x, y, epochs=2)
    """
    planned = plan(model, rank=rank, energy=energy, layers=layers, only_if_cheaper=only_if_cheaper)
    planned.log()
    return planned.apply(model)
