"""The one interface every strategy step implements (prune, qat, ptq, search, ...).

As in optax, a step is a small object that transforms a model; `Strategy` chains
them. A step gets the model and a `StepContext` (the user's data, epochs, target,
how to compile and fit), and returns a `StepResult`: the model passed to the next
step and anything the step wants in its report row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import keras

if TYPE_CHECKING:
    from kstruct.training import StepContext


@dataclass
class StepResult:
    """What a step hands on.

    Attributes:
        model: the model the next step (and the export) receives.
        notes: extra fields for this step's row in the report (JSON-serializable).
        tflite: a TFLite file the step already produced for the target (e.g. `ptq`),
            used instead of converting `model` again.
    """

    model: keras.Model
    notes: dict[str, Any] = field(default_factory=dict)
    tflite: bytes | None = None


class Step:
    """Base class of strategy steps.

    Subclasses set `name` (the word used in strategy strings), implement `apply`,
    and `__str__` that prints the step back in the strategy grammar.
    """

    name: ClassVar[str] = ""

    def apply(self, model: keras.Model, context: "StepContext") -> StepResult:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<kstruct step {self}>"
