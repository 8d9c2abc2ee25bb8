"""Model-level pruning: wrap the prunable layers (`prune`), bake the masks in (`strip`), measure (`sparsity`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from kstruct._graph import check_graph_model, fresh_copy, leaf_layers, rebuild
from kstruct.engine.layer_selection import LayerSelector, select_layers
from kstruct.engine.wrappers import strip_declared
from kstruct.errors import PruningError
from kstruct.pruning.prunable import prunable_weights, skip_reason
from kstruct.pruning.schedules import PruningSchedule
from kstruct.pruning.wrapper import PruneWrapper


def prune(
    model: keras.Model,
    schedule: PruningSchedule | None = None,
    m_by_n: tuple[int, int] | None = None,
    layers: LayerSelector = None,
) -> keras.Model:
    """Returns a copy of `model` whose prunable layers train with magnitude masks.

    Args:
        model: a Sequential or functional Keras model (nested ones included). It is
            not modified.
        schedule: `ConstantSparsity` or `PolynomialDecay`; how sparse, and when.
        m_by_n: `(n, m)`, e.g. `(2, 4)`: keep `n` of every `m` weights along the
            input-channel axis. Layers whose input channels are not a multiple of
            `m` are left dense, with a warning naming them.
        layers: which prunable layers to prune: a name, a regex matched against
            whole names, a list of those, or a predicate `layer -> bool`.
            Default: every prunable layer.

    Returns:
        A new model, compiled like `model` if it was compiled. Train it with `fit`
        as usual (no callback needed), then call `strip`.

    Raises:
        UnsupportedModelError: for subclassed models.
        PruningError: when the model has no layer kstruct can prune (the message
            lists its layers and why each is left dense).
        ValueError: when `layers` selects no prunable layer.
    """
    check_graph_model(model, "kstruct.pruning.prune")
    if schedule is None and m_by_n is None:
        raise ValueError("Expected a `schedule` or `m_by_n`. Received neither; e.g. schedule=ConstantSparsity(0.5).")
    prunable = [layer for layer in leaf_layers(model) if prunable_weights(layer)]
    if not prunable:
        raise PruningError(nothing_to_prune_message(model))
    chosen = {id(layer) for layer in select_layers(prunable, layers, kind="prunable")}
    skipped = []
    if m_by_n is not None:
        m = int(m_by_n[1])
        for layer in prunable:
            channels = {how.of(layer).shape[how.input_axis] for how in prunable_weights(layer)}
            uneven = sorted(c for c in channels if c % m)
            if id(layer) in chosen and uneven:
                chosen.discard(id(layer))
                skipped.append(f"{layer.name} ({uneven[0]} input channels)")
        if skipped:
            warnings.warn(
                f"kstruct: left dense for {m_by_n[0]}:{m} sparsity, input channels not a multiple of {m}: "
                + ", ".join(skipped),
                stacklevel=2,
            )

    def replace(layer):
        if id(layer) in chosen:
            return PruneWrapper(fresh_copy(layer), schedule=schedule, m_by_n=m_by_n)
        return fresh_copy(layer)

    def copy_weights(original, new_layer):
        target = new_layer.layer if isinstance(new_layer, PruneWrapper) else new_layer
        target.set_weights(original.get_weights())

    return rebuild(model, replace, copy_weights)


def nothing_to_prune_message(model: keras.Model) -> str:
    """Names each layer of `model` with weights and why pruning leaves it dense (and counts the rest)."""
    layers = list(leaf_layers(model))
    weighted = [layer for layer in layers if layer.weights]
    described = "; ".join(f"{layer.name} ({type(layer).__name__}: {skip_reason(layer)})" for layer in weighted)
    others = sorted({type(layer).__name__ for layer in layers if not layer.weights})
    return (
        f"kstruct.pruning.prune: model `{model.name}` has no layer kstruct can prune. "
        + (f"Layers with weights: {described}. " if weighted else "It has no layer with weights. ")
        + (f"Layers without weights: {', '.join(others)}. " if others else "")
        + "kstruct prunes the kernels of Dense, Conv*, DepthwiseConv2D and SeparableConv2D layers and the kernel "
        "and recurrent kernel of LSTM, GRU and SimpleRNN, also inside Bidirectional and TimeDistributed."
    )


def strip(model: keras.Model, *, check_updated: bool = True) -> keras.Model:
    """Returns a plain Keras model: the original layer classes, the masks baked into the kernels.

    Args:
        model: a model returned by `prune` (trained or not). It is not modified.
        check_updated: warn about wrapped layers whose mask never updated during
            training (a run shorter than the schedule's begin_step or frequency),
            which would silently leave them dense.
    """
    check_graph_model(model, "kstruct.pruning.strip")
    from kstruct.pruning.channels import channel_wrappers, strip_channels  # channel surgery: its own module

    if channel_wrappers(model):
        model = strip_channels(model)
        if not wrappers(model):
            return model
    if check_updated:
        stale = never_updated(model)
        if stale:
            warnings.warn(stale_message(stale), stacklevel=2)

    return strip_declared(model)  # each PruneWrapper declares its masked weights


def wrappers(model: keras.Model) -> list[PruneWrapper]:
    """Every PruneWrapper in `model`, nested models included."""
    return [layer for layer in leaf_layers(model) if isinstance(layer, PruneWrapper)]


def never_updated(model: keras.Model) -> list[PruneWrapper]:
    """The wrapped layers whose mask has not been computed once."""
    return [w for w in wrappers(model) if int(w.mask_updates.numpy()) == 0]


def stale_message(stale: list[PruneWrapper]) -> str:
    """Says which masks never updated and why, with the fix."""
    details = ", ".join(
        f"{w.layer.name} (trained {int(w.pruning_step.numpy())} steps; schedule begins at step "
        f"{w.schedule.begin_step}, updates every {w.schedule.frequency})"
        for w in stale
    )
    return (
        f"kstruct: the pruning mask never updated for {len(stale)} layer(s), so they are not pruned: {details}. "
        "Train for more steps, or lower begin_step/frequency."
    )


@dataclass
class LayerSparsity:
    name: str
    zeros: int
    size: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


@dataclass
class SparsityReport:
    """Zeros in each prunable weight, and in all of them together."""

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def size(self) -> int:
        """How many weights the sparsity is over: every prunable weight of the model."""
        return sum(layer.size for layer in self.layers)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def overall(self) -> float:
        return self.zeros / self.size if self.size else 0.0

    def as_dict(self) -> dict:
        return {
            "overall": self.overall,
            "layers": {layer.name: layer.sparsity for layer in self.layers},
        }

    def __str__(self) -> str:
        lines = [f"{'layer':<32} {'sparsity':>9} {'zeros':>10} {'size':>10}"]
        for layer in self.layers:
            lines.append(f"{layer.name:<32} {layer.sparsity:>9.2%} {layer.zeros:>10} {layer.size:>10}")
        lines.append(f"{'overall':<32} {self.overall:>9.2%} {self.zeros:>10} {self.size:>10}")
        return "\n".join(lines)


def sparsity(model: keras.Model) -> SparsityReport:
    """Measures the fraction of zeros in every prunable weight of `model` (wrapped or stripped).

    One entry per layer, by its original name; a recurrent layer's entry counts its kernel
    and recurrent kernel (both directions of a Bidirectional) together.
    """
    report = SparsityReport()
    for layer in leaf_layers(model):
        if isinstance(layer, PruneWrapper):
            values = [keras.ops.convert_to_numpy(value) for value in layer.masked_weights()]
            name = layer.layer.name
        elif isinstance(layer, keras.layers.Wrapper) and prunable_weights(layer.layer) and not prunable_weights(layer):
            # Another technique's wrapper (e.g. QAT) around a prunable layer: measure the inner weights.
            inner = layer.layer
            values = [keras.ops.convert_to_numpy(how.of(inner)) for how in prunable_weights(inner)]
            name = inner.name
        else:
            how = prunable_weights(layer)
            if not how or not layer.built:
                continue
            values = [keras.ops.convert_to_numpy(h.of(layer)) for h in how]
            name = layer.name
        zeros = sum(int(np.sum(v == 0)) for v in values)
        report.layers.append(LayerSparsity(name, zeros, sum(int(v.size) for v in values)))
    return report
