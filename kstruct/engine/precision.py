"""Mixed precision through kstruct's rebuilt models.

A rebuilt model's layers keep their own dtype policies (their configs carry them), so a
mixed_float16 model's copies still compute in float16. The model object itself, though,
takes the global policy when kstruct builds it, and Keras decides loss scaling from the
model's policy alone: `compile` wraps the optimizer in a `LossScaleOptimizer` only for a
model whose own policy is mixed_float16. Without it, small float16 gradients flush to
zero. So a model whose layers train in mixed_float16 gets that policy before it compiles,
as the user's own model had; the global policy is never touched.
"""

from __future__ import annotations

import keras

from kstruct._graph.checks import leaf_layers

MIXED_FLOAT16 = "mixed_float16"


def _policies(model: keras.Model):
    for layer in leaf_layers(model):
        yield layer.dtype_policy.name
        if isinstance(layer, keras.layers.Wrapper):  # a technique's wrapper around the user's layer
            yield layer.layer.dtype_policy.name


def trains_in_mixed_float16(model: keras.Model) -> bool:
    """Whether any layer of `model` (nested models and wrapped layers included) is mixed_float16."""
    return any(name == MIXED_FLOAT16 for name in _policies(model))


def match_loss_scaling(model: keras.Model) -> None:
    """Gives `model` (a copy kstruct made, not yet compiled) the mixed_float16 policy when its layers
    train in it, so that `compile` adds loss scaling as it did for the user's model."""
    if model.dtype_policy.name != MIXED_FLOAT16 and trains_in_mixed_float16(model):
        model.dtype_policy = MIXED_FLOAT16


def scale_losses_for(trainer: keras.Model, model: keras.Model) -> None:
    """Loss scaling for a compiled `trainer` built around `model` (a Distiller around its student):
    the trainer's own policy is not the student's, so its optimizer is wrapped as Keras's
    `compile` would have wrapped the student's."""
    if trains_in_mixed_float16(model) and not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer):
        trainer.optimizer = keras.optimizers.LossScaleOptimizer(trainer.optimizer)
