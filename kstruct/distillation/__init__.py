"""Knowledge distillation on `keras.distillation`: a step, and the Distiller the training steps share.

    trainer = kstruct.distillation.distiller(teacher, student, temperature=4, alpha=0.5)
    trainer.fit(x, y, epochs=3)        # trains `student` in place

`distiller` gives Keras's `Distiller`, set up for any classifier (softmax outputs
included) with a frozen copy of the teacher; `Distill` is the `distill(...)` step.
"""

from kstruct.distillation.distiller import (
    DEFAULT_ALPHA,
    DEFAULT_TEMPERATURE,
    ClassScoreDistillation,
    check_teacher,
    distiller,
)
from kstruct.distillation.step import Distill

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_TEMPERATURE",
    "ClassScoreDistillation",
    "Distill",
    "check_teacher",
    "distiller",
]
