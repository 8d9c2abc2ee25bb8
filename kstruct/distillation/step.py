"""The `distill` strategy step: fine-tune the current model with the original (or `teacher=`) as teacher."""

from __future__ import annotations

import keras

from kstruct.errors import StrategyError
from kstruct.distillation.distiller import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, check_settings, copy_model
from kstruct.engine.arguments import finite_number_argument
from kstruct.engine.step import StepResult, TrainingStep
from kstruct.engine.training import StepContext


class _KeepZeros(keras.constraints.Constraint):
    """Holds a weight's zeros at zero after each optimizer update (on any backend)."""

    def __init__(self, mask, inner=None):
        self.mask, self.inner = mask, inner

    def __call__(self, weight):
        return (weight if self.inner is None else self.inner(weight)) * self.mask


def _keep_zeros(model: keras.Model) -> list:
    """Constrains every kernel that has exact zeros (pruned weights: trained ones are never
    exactly 0.0) so fine-tuning cannot regrow them; returns the variables to release."""
    held = []
    for variable in model.trainable_variables:
        if len(variable.shape) < 2:
            continue
        nonzero = keras.ops.convert_to_numpy(variable) != 0
        if not nonzero.all():
            variable.constraint = _KeepZeros(keras.ops.cast(nonzero, variable.dtype), variable.constraint)
            held.append(variable)
    return held


class Distill(TrainingStep):
    """Knowledge distillation: the current model learns from the teacher's softened class scores.

    The teacher is the model given to `optimize`, or its `teacher=` argument. After
    compression (pruning, a narrower search result) the student recovers faster from
    the teacher's scores, which say how wrong each wrong class is, than from labels alone.
    Weights that are exactly zero (pruned) stay zero.

    Args:
        epochs: fine-tuning epochs (default 3).
        temperature: > 0; softens both distributions (default 4).
        alpha: weight of the label loss in [0, 1]; 1 - alpha weighs the teacher (default 0.5).
        **training: `optimizer`, `learning_rate`, `lr_schedule`, `batch_size` (see `TrainingStep`).
    """

    name = "distill"

    def __init__(
        self, *, epochs: int = 3, temperature: float = DEFAULT_TEMPERATURE, alpha: float = DEFAULT_ALPHA, **training
    ):
        if epochs is None:
            raise StrategyError("Expected `epochs` to be a positive int. Received: epochs=None")
        self.init_training(epochs, True, training)
        self.temperature, self.alpha = check_settings(
            finite_number_argument("temperature", temperature), finite_number_argument("alpha", alpha)
        )

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        context = self.training_context(context)
        student = context.compile(copy_model(model))  # the incoming model (maybe the user's) stays as it was
        held = _keep_zeros(student)  # distilling a pruned model must not undo the pruning
        try:
            context.fit(student, distill=True, temperature=self.temperature, alpha=self.alpha)
        finally:
            for variable in held:
                variable.constraint = variable.constraint.inner
        return StepResult(model=student, notes={"temperature": self.temperature, "alpha": self.alpha})
