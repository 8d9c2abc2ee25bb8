"""How important each channel of a group is: `l2`, `bn` and `taylor`, summed over the whole group.

A channel lives in several layers at once (the Conv that makes it, the BatchNorm
and DepthwiseConv that carry it, every layer that reads it), so its score sums
over all of them, as Torch-Pruning's group importance does: ranking on the first
Conv alone would ignore half the weights that go with the channel.

`taylor` needs gradients. Reaching them inside a layer during `fit` differs per
backend, so they are computed here, before training, from a few batches of the
data given to `prune_channels` (TensorFlow, JAX and PyTorch); the ranking is then fixed.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from kstruct._graph import ChannelGroup, Member
from kstruct._graph.channels import member_positions
from kstruct._graph.graph import layers_by_name
from kstruct.pruning.channels_wrapper import reader_weight

CRITERIA = ("l2", "bn", "taylor")
TAYLOR_BATCHES = 4


def _weights_of(layer: keras.layers.Layer, role: str) -> list[tuple[object, int]]:
    """The (variable, axis) pairs along which a member layer holds its group's channels."""
    cls = type(layer).__name__
    if role == "input":
        attribute, axis = reader_weight(layer)
        return [(getattr(layer, attribute), axis)]
    if role == "output":
        if cls.startswith("SeparableConv"):
            pairs = [(layer.pointwise_kernel, -1)]
        else:
            pairs = [(layer.kernel, -2 if cls.endswith("Transpose") else -1)]
        return pairs + ([(layer.bias, 0)] if getattr(layer, "use_bias", False) else [])
    if cls.startswith("Depthwise"):
        return [(layer.kernel, -2)]
    if cls == "BatchNormalization":
        return [(v, 0) for v in (layer.gamma, layer.beta) if v is not None]
    return []


def _per_channel(values: np.ndarray, axis: int, member: Member, size: int) -> np.ndarray:
    """Sums `values` over every axis but `axis`, then over each channel's positions."""
    moved = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis]).sum(axis=0)
    return moved[member_positions(member, size)].sum(axis=1)


def _score(model: keras.Model, group: ChannelGroup, transform: Callable) -> np.ndarray:
    total, layers = np.zeros(group.size), layers_by_name(model)
    for member in group.members:
        layer = layers[member.layer]
        for variable, axis in _weights_of(layer, member.role):
            total += _per_channel(transform(variable), axis, member, group.size)
    return total


def _bn_score(model: keras.Model, group: ChannelGroup) -> np.ndarray | None:
    total, found, layers = np.zeros(group.size), False, layers_by_name(model)
    for member in group.members:
        layer = layers[member.layer]
        if member.role == "channel" and type(layer).__name__ == "BatchNormalization" and layer.gamma is not None:
            total += _per_channel(np.abs(keras.ops.convert_to_numpy(layer.gamma)), 0, member, group.size)
            found = True
    return total if found else None


def gradients(model: keras.Model, x, y, loss) -> dict[str, np.ndarray]:
    """d loss / d w for every trainable variable (by path), summed over a few batches of (x, y).

    Backend-specific by necessity (TensorFlow's tape, JAX's grad, torch's autograd); the only such code in pruning.
    """
    loss_fn = keras.losses.get(loss) if not callable(loss) else loss
    backend = keras.backend.backend()
    totals: dict[str, np.ndarray] = {}
    batch = max(1, min(32, len(x)))
    for start in range(0, min(len(x), batch * TAYLOR_BATCHES), batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        if backend == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                value = keras.ops.mean(loss_fn(yb, model(xb, training=False)))
            grads = tape.gradient(value, model.trainable_variables)
        elif backend == "jax":
            import jax

            trainable = [v.value for v in model.trainable_variables]
            others = [v.value for v in model.non_trainable_variables]

            def objective(values):
                out, _ = model.stateless_call(values, others, xb, training=False)
                return keras.ops.mean(loss_fn(yb, out))

            grads = jax.grad(objective)(trainable)
        elif backend == "torch":
            import torch

            value = keras.ops.mean(loss_fn(yb, model(xb, training=False)))
            parameters = [v.value for v in model.trainable_variables]
            grads = [
                None if g is None else g.detach().cpu().numpy()
                for g in torch.autograd.grad(value, parameters, allow_unused=True)
            ]
        else:
            raise NotImplementedError(
                f"criterion='taylor' supports the tensorflow, jax and torch backends. Received: backend={backend!r}; "
                "use criterion='l2' or 'bn'."
            )
        for variable, grad in zip(model.trainable_variables, grads):
            if grad is not None:
                totals[variable.path] = totals.get(variable.path, 0) + np.asarray(grad)
    return totals


def group_scores(
    model: keras.Model, groups: list[ChannelGroup], criterion: str, *, data=None, loss=None
) -> tuple[list[np.ndarray], list[str]]:
    """One importance score per channel of each group (higher: keep), and notes on fallbacks.

    Raises:
        ValueError: an unknown criterion, or `taylor` without data and a loss.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"Expected `criterion` to be one of {CRITERIA}. Received: criterion={criterion!r}")
    notes: list[str] = []

    def squares(variable):
        return np.square(keras.ops.convert_to_numpy(variable))

    if criterion == "taylor":
        if data is None or (loss is None and not model.compiled):
            raise ValueError(
                "criterion='taylor' needs gradients: pass data=(x, y) and compile the model (or pass loss=)."
            )
        x, y = (np.asarray(v) for v in data)
        grads = gradients(model, x, y, loss if loss is not None else model.loss)

        def taylor(variable):
            value = keras.ops.convert_to_numpy(variable)
            return np.abs(value * grads.get(variable.path, np.zeros_like(value)))

        return [_score(model, g, taylor) for g in groups], notes
    scores = []
    for group in groups:
        score = _bn_score(model, group) if criterion == "bn" else None
        if criterion == "bn" and score is None:
            notes.append(f"{'+'.join(group.producers)}: no BatchNormalization, ranked by l2")
        scores.append(score if score is not None else _score(model, group, squares))
    return scores, notes
