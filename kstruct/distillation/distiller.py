"""Keras's `Distiller` for any classifier: checked teacher, frozen copy, softmax outputs handled.

`keras.distillation.LogitsDistillation` divides its inputs by the temperature and
applies softmax, so it expects logits (and, in Keras 3.15, a `KLDivergence` object:
its default string loss skips the softmax and gives 0). Fed probabilities (a model ending in
softmax) it silently computes the wrong loss. Since softmax(log p / T) equals
softmax(z / T) when p = softmax(z), taking the log of probability outputs first
gives exactly the loss the logits would have given, without rebuilding the model.
"""

from __future__ import annotations

import keras
import numpy as np

from kstruct._graph import copy_compile, is_graph_model, rebuild
from kstruct.errors import DistillationError
from kstruct.engine.training import shape_text

DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.5
_EPSILON = 1e-7  # the clip Keras's own crossentropy applies to probabilities


def check_settings(temperature: float, alpha: float) -> tuple[float, float]:
    """Returns `(temperature, alpha)` as floats, or raises ValueError naming the bad one."""
    if isinstance(temperature, bool) or not float(temperature) > 0:
        raise ValueError(f"Expected `temperature` > 0. Received: temperature={temperature}")
    if isinstance(alpha, bool) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"Expected `alpha` (the weight of the label loss) in [0, 1]. Received: alpha={alpha}")
    return float(temperature), float(alpha)


def check_teacher(teacher: keras.Model, student: keras.Model) -> None:
    """Raises DistillationError unless `teacher` takes the student's inputs and gives its class scores.

    Distillation compares the two outputs class by class, so a teacher with another
    output shape cannot teach (and Keras's own check would name neither model).
    """
    if not isinstance(teacher, keras.Model):
        raise DistillationError(f"Expected `teacher` to be a Keras model. Received: an object of type {type(teacher).__name__}")
    for what, model in (("teacher", teacher), ("student", student)):
        if len(model.outputs or []) != 1:
            raise DistillationError(
                f"Distillation needs a model with one output. Received: {what} `{model.name}` with "
                f"{len(model.outputs or [])} outputs. Distillation compares one output's class scores: for this "
                "model leave out the `distill` step and `distill=true`, and the steps train on the labels."
            )
    t_in, s_in = tuple(teacher.inputs[0].shape), tuple(student.inputs[0].shape)
    t_out, s_out = tuple(teacher.outputs[0].shape), tuple(student.outputs[0].shape)
    if t_in[1:] != s_in[1:]:
        raise DistillationError(
            f"Teacher `{teacher.name}` takes inputs of shape {shape_text(t_in)}, but the student `{student.name}` "
            f"takes {shape_text(s_in)}. Pass a teacher= that takes the same inputs."
        )
    if t_out[1:] != s_out[1:]:
        raise DistillationError(
            f"Teacher `{teacher.name}` outputs shape {shape_text(t_out)}, but the student `{student.name}` outputs "
            f"{shape_text(s_out)}; distillation compares them class by class, so they must match. "
            "Pass a teacher= with the student's output shape."
        )
    if s_out[-1] is None or s_out[-1] < 2:
        raise DistillationError(
            f"Distillation needs class scores over 2 or more classes. Received: student `{student.name}` "
            f"with output shape {shape_text(s_out)}."
        )


def outputs_probabilities(model: keras.Model, sample: np.ndarray) -> bool:
    """True when `model` outputs a probability distribution (softmax) on `sample` inputs.

    Measured rather than read from the last layer, so wrapped layers (pruning, QAT)
    and `Activation("softmax")` / `Softmax()` endings are all recognized.
    """
    out = np.asarray(keras.ops.convert_to_numpy(model(sample, training=False)), dtype=np.float64)
    return bool(np.all(out >= 0.0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


class ClassScoreDistillation(keras.distillation.LogitsDistillation):
    """`LogitsDistillation` that also accepts probabilities: their log is used as logits.

    Args:
        temperature: softens both distributions; higher shares more of the teacher's
            "dark knowledge" about wrong classes.
        teacher_probabilities, student_probabilities: whether each model's output is
            a softmax distribution rather than logits.
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, teacher_probabilities: bool = False,
                 student_probabilities: bool = False, **kwargs):
        # A KLDivergence instance, not the string: Keras 3.15 turns "kl_divergence" into a plain
        # function, misses its softmax branch, and returns 0 for logits with negative values.
        kwargs.setdefault("loss", keras.losses.KLDivergence())
        super().__init__(temperature=temperature, **kwargs)
        self.teacher_probabilities = bool(teacher_probabilities)
        self.student_probabilities = bool(student_probabilities)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        if self.teacher_probabilities:
            teacher_outputs = keras.ops.log(keras.ops.clip(teacher_outputs, _EPSILON, 1.0))
        if self.student_probabilities:
            student_outputs = keras.ops.log(keras.ops.clip(student_outputs, _EPSILON, 1.0))
        return super().compute_loss(teacher_outputs, student_outputs, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            teacher_probabilities=self.teacher_probabilities, student_probabilities=self.student_probabilities
        )
        return config


def copy_model(model: keras.Model) -> keras.Model:
    """A copy of `model` with its weights. The Distiller sets `trainable=False` on its teacher,
    and a step must not train the model it was handed: both get a copy."""
    if is_graph_model(model):  # the graph core also carries adapted preprocessing state and live Lambdas
        return rebuild(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def distiller(
    teacher: keras.Model,
    student: keras.Model,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    alpha: float = DEFAULT_ALPHA,
    sample: np.ndarray | None = None,
) -> keras.distillation.Distiller:
    """Keras's `Distiller` that trains `student` (in place) from a frozen copy of `teacher`.

    The loss is `alpha * label loss + (1 - alpha) * T^2 * KL(teacher || student)` on
    temperature-softened class scores. Logits and softmax outputs both work.

    Args:
        teacher: the model to learn from; it is copied, never modified.
        student: a compiled model; the Distiller uses its loss and metrics.
        temperature: > 0; softens both distributions.
        alpha: weight of the label loss in [0, 1] (1 - alpha weighs the teacher).
        sample: a few inputs, to tell probability outputs from logits (default:
            random inputs of the student's input shape).

    Returns:
        A compiled `keras.distillation.Distiller`; `fit` it like any model.

    Raises:
        DistillationError: when the teacher's inputs or outputs do not match the student's.
        ValueError: for `temperature <= 0` or `alpha` outside [0, 1].
    """
    temperature, alpha = check_settings(temperature, alpha)
    check_teacher(teacher, student)
    if not student.compiled:
        raise DistillationError(f"Compile the student `{student.name}` first: the Distiller uses its loss and metrics.")
    if sample is None:
        shape = [2 if d is None else d for d in student.inputs[0].shape]
        sample = np.random.default_rng(0).normal(size=shape).astype(student.inputs[0].dtype)
    frozen = copy_model(teacher)  # the Distiller freezes it
    loss = ClassScoreDistillation(
        temperature,
        teacher_probabilities=outputs_probabilities(frozen, sample),
        student_probabilities=outputs_probabilities(student, sample),
    )
    trainer = keras.distillation.Distiller(
        teacher=frozen, student=student, distillation_losses=loss, student_loss_weight=alpha
    )
    copy_compile(student, trainer)  # the student's loss, metrics and a fresh optimizer of its kind
    return trainer
