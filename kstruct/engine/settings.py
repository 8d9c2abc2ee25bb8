"""Training settings a training step may set for its own fine-tuning: optimizer, learning rate,
learning-rate schedule and batch size.

Why per step: whether a compressed model recovers depends on how it is fine-tuned as much as
on the compression, and `auto` searches these settings per trial. A step without settings
trains as the user's model was compiled (its optimizer, learning rate and batch size).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Callable

from kstruct.errors import StrategyError

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
SETTING_NAMES = ("optimizer", "learning_rate", "lr_schedule", "batch_size")
MAX_BATCH_SIZE = 2**20


@dataclass(frozen=True)
class TrainingSettings:
    """How one step fine-tunes; None means "as the user's model was compiled / as optimize was called".

    Attributes:
        optimizer: "adam", "adamw" or "sgd" (SGD with Nesterov momentum 0.9).
        learning_rate: the peak learning rate, > 0 and at most 1.
        lr_schedule: "constant", or "cosine" (decays to 0 over the step's fine-tuning).
        batch_size: the batch size for array training data.
    """

    optimizer: str | None = None
    learning_rate: float | None = None
    lr_schedule: str | None = None
    batch_size: int | None = None

    def __post_init__(self):
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise StrategyError(f"Expected `optimizer` to be one of {OPTIMIZERS}. Received: optimizer={self.optimizer!r}")
        if self.learning_rate is not None:
            rate = self.learning_rate
            valid = isinstance(rate, numbers.Real) and not isinstance(rate, bool) and math.isfinite(rate) and 0 < rate <= 1
            if not valid:
                raise StrategyError(f"Expected `learning_rate` in (0, 1]. Received: learning_rate={rate!r}")
            object.__setattr__(self, "learning_rate", float(rate))
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise StrategyError(
                f"Expected `lr_schedule` to be one of {LR_SCHEDULES}. Received: lr_schedule={self.lr_schedule!r}"
            )
        if self.batch_size is not None:
            size = self.batch_size
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 1 <= size <= MAX_BATCH_SIZE:
                raise StrategyError(f"Expected `batch_size` to be an int in [1, {MAX_BATCH_SIZE}]. Received: batch_size={size!r}")
            object.__setattr__(self, "batch_size", int(size))

    def as_dict(self) -> dict[str, Any]:
        """The settings that are set, in `SETTING_NAMES` order."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @property
    def changes_optimizer(self) -> bool:
        return self.optimizer is not None or self.learning_rate is not None or self.lr_schedule not in (None, "constant")

    def optimizer_config(self, source: dict | None, total_steps: Callable[[], int]) -> Any:
        """The optimizer to compile with, serialized: `source` (the user's) unless a setting changes
        it; a cosine schedule decays over `total_steps()` optimizer steps (asked only then)."""
        import keras

        if not self.changes_optimizer:
            return source
        if self.optimizer is not None:
            kinds = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}
            extra = {"momentum": 0.9, "nesterov": True} if self.optimizer == "sgd" else {}
            optimizer = kinds[self.optimizer](**extra)
        elif source is not None:
            optimizer = keras.optimizers.deserialize(source)
        else:
            optimizer = keras.optimizers.Adam()
        config = optimizer.get_config()
        rate = self.learning_rate if self.learning_rate is not None else float(_plain_rate(config["learning_rate"]))
        if self.lr_schedule == "cosine":
            config["learning_rate"] = keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, total_steps()))
        else:
            config["learning_rate"] = rate
        return keras.optimizers.serialize(type(optimizer).from_config(config))


def _plain_rate(rate: Any) -> float:
    """A learning rate from an optimizer config: a number, or a schedule's initial rate."""
    if isinstance(rate, numbers.Real):
        return float(rate)
    if isinstance(rate, dict):  # a serialized schedule
        config = rate.get("config", {})
        for key in ("initial_learning_rate", "learning_rate"):
            if isinstance(config.get(key), numbers.Real):
                return float(config[key])
    return 0.001  # Keras's default for Adam
