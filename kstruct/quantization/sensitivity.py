"""Which layers int8 hurts most: the ranking for a per-layer float fallback (the most sensitive first).

Why measured this way: Intel Neural Compressor's accuracy-aware tuning sends the ops that lose most
back to float, found by one trial per op. A trial of `auto` is a whole fine-tuning run, so the
ranking is measured once, before the search, from the float model alone: for each layer that
`quantize` makes int8, one forward pass on a validation sample with only that layer rounded the
way the int8 file rounds it. A layer with one outlier weight (its per-tensor scale set by the
outlier, every other weight rounded to zero) or a huge activation range ranks first.

`ptq(float_layers=k)` leaves the k layers ranked first in float inside the int8 file
(`tflite_export.convert(..., float_layers=...)`), and `auto` chooses k for the `int8` target
(`PTQ.search_space`). Only post-training quantization can: the converter quantizes a QAT graph's
float layers too, while converting it. At `bits=4` the same ranking orders the Dense/Conv layers for
the `int4` target, where `auto` keeps the most sensitive ones at 8 bits (`QAT.search_space`).
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from kstruct._graph import rebuild
from kstruct.quantization.layers import kernel_spec, supports_4_bits
from kstruct.quantization.plan import plan_model
from kstruct.quantization.quantizers import FakeQuant, quantize_weight

logger = logging.getLogger("kstruct")

SAMPLES = 64  # validation inputs per forward pass: the ranking, not the accuracy, is what is measured


def _first(x: Any, count: int) -> Any:
    return keras.tree.map_structure(lambda a: np.asarray(a)[:count], x)


def _outputs(model: keras.Model, x: Any) -> np.ndarray:
    flat = keras.tree.flatten(model(x, training=False))
    return np.concatenate([np.asarray(keras.ops.convert_to_numpy(t), dtype="float64").ravel() for t in flat])


def _functional(model: keras.Model) -> keras.Model | None:
    """A functional view of `model` over its own layers (nothing copied), or None for a subclassed model."""
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError):  # a Sequential never built on an Input
            return None
        if not inputs:
            return None
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs,
                           name=model.name)
    return model if "layers" in model.get_config() else None


def _with_one_layer_int8(
    model: keras.Model, name: str, tail: str, value_range: tuple[float, float], bits: int = 8
) -> keras.Model:
    """A copy of `model` in which only layer `name` is quantized: its kernels (`bits`), and the output of `tail`."""
    spec = kernel_spec(model.get_layer(name))

    def copy_weights(original, new):
        new.set_weights(original.get_weights())
        if original.name == name:
            for attribute, axis in spec.kernels.items():
                kernel = getattr(new, attribute)
                # 4-bit kernels are per output channel, as the int4 file stores them (QuantizeWrapper).
                channel_axis = -1 if bits == 4 else axis(tuple(kernel.shape))
                kernel.assign(quantize_weight(kernel, channel_axis, bits=bits))

    return rebuild(model, copy_weights=copy_weights, insert_after={tail: lambda: FakeQuant(value_range=value_range)})


def _tails(functional: keras.Model, bits: int) -> dict[str, str]:
    """Each ranked layer -> the layer whose output the int8 file rounds (after its folded BatchNorm and activation)."""
    return {
        name: plan.activation or plan.batch_norm or name
        for name, plan in plan_model(functional).items()
        if plan.kind == "weighted" and (bits == 8 or supports_4_bits(functional.get_layer(name)))
    }


def ranked_layers(model: keras.Model, *, bits: int = 8) -> list[str]:
    """The layers `layer_sensitivity` ranks, in graph order, without measuring anything (for a search space's size)."""
    functional = _functional(model)
    return [] if functional is None else list(_tails(functional, bits))


def layer_sensitivity(model: keras.Model, x: Any, *, samples: int = SAMPLES, bits: int = 8) -> list[tuple[str, float]]:
    """`(layer name, sensitivity)` for each layer int8 QAT quantizes, most sensitive first.

    A layer's sensitivity is how far the model's outputs move on `x` when that layer alone
    is int8: its weights rounded as TFLite stores them (symmetric; per channel for
    convolutions, per tensor for Dense) and its output (after a folded BatchNormalization and
    fused activation) rounded to 256 levels over the range it takes on `x`. It is the mean
    absolute change of the outputs over their mean absolute value. Layers inside nested
    models and shared layers are not ranked.

    Args:
        model: a Sequential or functional Keras model (not modified).
        x: model inputs (the validation inputs); the first `samples` are used.
        bits: 8, or 4 to rank the layers that can take 4-bit kernels (Dense, Conv1D, Conv2D)
            by their 4-bit per-channel kernels (the `int4` target's).

    Returns:
        The ranking; empty for a model kstruct cannot rewrite or without weighted layers.
    """
    functional = _functional(model)
    if functional is None or x is None:
        return []
    x = _first(x, samples)
    tails = _tails(functional, bits)
    probes, names = [], []
    for name, tail in tails.items():
        try:
            probes.append(functional.get_layer(tail).output)
            names.append(name)
        except (AttributeError, ValueError):  # a shared layer has no single output
            continue
    if not names:
        return []
    reference = _outputs(functional, x)
    scale = float(np.mean(np.abs(reference))) + 1e-12
    activations = keras.Model(functional.input, probes)(x, training=False)
    ranking = []
    for name, activation in zip(names, keras.tree.flatten(activations)):
        values = keras.ops.convert_to_numpy(activation)
        low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        if high - low < 1e-6:
            high = low + 1e-3
        changed = _outputs(_with_one_layer_int8(functional, name, tails[name], (low, high), bits), x)
        ranking.append((name, float(np.mean(np.abs(changed - reference))) / scale))
    ranking.sort(key=lambda item: -item[1])
    logger.info("kstruct: %d-bit sensitivity, most sensitive first: %s", bits,
                ", ".join(f"{name} {value:.4f}" for name, value in ranking))
    return ranking
