"""Pruning schedules: the target sparsity as a function of the training step.

They have the meaning of tensorflow-model-optimization's schedules of the same
names (`ConstantSparsity`, `PolynomialDecay`), so tfmot users keep their numbers,
but they are written with `keras.ops` and work on any Keras backend. Calling a
schedule with a step returns `(should_update_mask, sparsity)`.
"""

from __future__ import annotations

import keras
from keras import ops


def _check_sparsity(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Expected `{name}` in [0, 1). Received: {name}={value}")


def _check_steps(begin_step: int, end_step: int, frequency: int, *, allow_open_end: bool) -> None:
    if begin_step < 0:
        raise ValueError(f"Expected `begin_step` >= 0. Received: begin_step={begin_step}")
    if end_step == -1 and not allow_open_end:
        raise ValueError("Expected `end_step` >= `begin_step`; this schedule needs an end. Received: end_step=-1")
    if end_step != -1 and end_step < begin_step:
        raise ValueError(
            f"Expected `end_step` >= `begin_step` (or -1 for no end). "
            f"Received: begin_step={begin_step}, end_step={end_step}"
        )
    if frequency <= 0:
        raise ValueError(f"Expected `frequency` > 0. Received: frequency={frequency}")


class PruningSchedule:
    """Base class: when to update the mask, and to which sparsity."""

    begin_step: int
    end_step: int
    frequency: int

    def __call__(self, step):
        raise NotImplementedError

    @property
    def final_sparsity(self) -> float:
        raise NotImplementedError

    def sparsity_at(self, step: int) -> float:
        """The sparsity the schedule asks for at `step`, in plain Python (no tensors)."""
        raise NotImplementedError

    def sparsity_after(self, steps: int) -> float | None:
        """The sparsity of the mask after `steps` optimizer steps (0 to steps - 1), known before training.

        None when the mask is never computed in that many steps. Lets a caller refuse a
        schedule that cannot reach its target before spending any training on it.
        """
        last = steps - 1 if self.end_step < 0 else min(steps - 1, self.end_step)
        if last < self.begin_step:
            return None
        last -= (last - self.begin_step) % self.frequency  # the last step on the update grid
        return self.sparsity_at(last)

    def _should_update(self, step):
        # The mask is recomputed every `frequency` steps inside [begin, end]; end -1 means forever.
        step = ops.cast(step, "int64")
        in_range = ops.logical_and(
            ops.greater_equal(step, self.begin_step),
            ops.logical_or(ops.less_equal(step, self.end_step), self.end_step < 0),
        )
        on_turn = ops.equal(ops.mod(step - self.begin_step, self.frequency), 0)
        return ops.logical_and(in_range, on_turn)

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> "PruningSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()


@keras.saving.register_keras_serializable(package="kstruct")
class ConstantSparsity(PruningSchedule):
    """Prunes to a fixed `target_sparsity` every `frequency` steps in [begin_step, end_step].

    Args:
        target_sparsity: fraction of weights set to zero, in [0, 1).
        begin_step: first step at which the mask is computed.
        end_step: last step at which it is recomputed; -1 keeps updating for ever.
        frequency: steps between mask updates.
    """

    def __init__(self, target_sparsity: float, begin_step: int = 0, end_step: int = -1, frequency: int = 100):
        _check_sparsity("target_sparsity", target_sparsity)
        _check_steps(begin_step, end_step, frequency, allow_open_end=True)
        self.target_sparsity = float(target_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    @property
    def final_sparsity(self) -> float:
        return self.target_sparsity

    def sparsity_at(self, step: int) -> float:
        return self.target_sparsity

    def __call__(self, step):
        return self._should_update(step), ops.convert_to_tensor(self.target_sparsity, "float32")

    def get_config(self) -> dict:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="kstruct")
class PolynomialDecay(PruningSchedule):
    """Raises sparsity from `initial_sparsity` to `final_sparsity` between begin_step and end_step.

    s(t) = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power,
    with t clipped to [begin, end]: pruning starts fast and slows down, which leaves
    the network time to recover from the last, most damaging cuts.
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3.0,
        frequency: int = 100,
    ):
        _check_sparsity("initial_sparsity", initial_sparsity)
        _check_sparsity("final_sparsity", final_sparsity)
        _check_steps(begin_step, end_step, frequency, allow_open_end=False)
        self.initial_sparsity = float(initial_sparsity)
        self._final_sparsity = float(final_sparsity)
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.power = float(power)
        self.frequency = int(frequency)

    @property
    def final_sparsity(self) -> float:
        return self._final_sparsity

    def sparsity_at(self, step: int) -> float:
        span = max(self.end_step - self.begin_step, 1)
        progress = min(max((step - self.begin_step) / span, 0.0), 1.0)
        return self._final_sparsity + (self.initial_sparsity - self._final_sparsity) * (1.0 - progress) ** self.power

    def __call__(self, step):
        span = max(self.end_step - self.begin_step, 1)
        progress = ops.clip(ops.cast(ops.cast(step, "int64") - self.begin_step, "float32") / span, 0.0, 1.0)
        sparsity = self._final_sparsity + (self.initial_sparsity - self._final_sparsity) * ops.power(
            1.0 - progress, self.power
        )
        return self._should_update(step), ops.cast(sparsity, "float32")

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self._final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
