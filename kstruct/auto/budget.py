"""`kstruct.Budget`: what `auto` must reach (speed, size, parameters) and what it may lose (accuracy)."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

from kstruct.errors import StrategyError

# Budget key -> (the cost it limits, how the limit reads): "speedup=2" means original / result >= 2.
GOALS = ("speedup", "compression", "latency_ms", "tflite_bytes", "params")
TUNERS = ("bayesian", "random", "hyperband")


@dataclass(frozen=True)
class Cost:
    """What one model costs on the target, and how good it is (the report's metric, TFLite file).

    The file's figures are None for an untrained structure under a budget that limits only
    parameters: its file is never made (converting and timing it would decide nothing)."""

    latency_ms: float | None
    tflite_bytes: int | None
    gzip_bytes: int | None
    params: int
    metric: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def speedup(original: Cost, result: Cost) -> float | None:
    """Original latency / result latency (None when the result's file was not timed)."""
    return None if result.latency_ms is None else original.latency_ms / max(result.latency_ms, 1e-9)


def compression(original: Cost, result: Cost) -> float | None:
    """Original gzipped file / result's (None when the result's file was not made)."""
    return None if result.gzip_bytes is None else original.gzip_bytes / max(result.gzip_bytes, 1)


def _positive(name: str, value: Any, *, integer: bool = False) -> Any:
    if value is None:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
        what = "a positive int" if integer else "a positive number"
        raise StrategyError(f"Expected `{name}` to be {what}. Received: {name}={value!r}")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class Budget:
    """A deployment budget for `auto`: at least one cost limit, and the accuracy it may cost.

    Attributes:
        max_accuracy_drop: how much the result's metric (accuracy, or the loss for regression,
            on the validation data, read from the TFLite file) may be worse than the original
            Keras model's; absolute, in [0, 1]. Default 0.01 (one point).
        speedup: original latency / result latency (both files for the target, timed on LiteRT,
            one thread, in the same run): at least this.
        compression: original gzipped file / result's gzipped file: at least this.
        latency_ms, tflite_bytes, params: at most this.
        trials: how many chains to try (default 20).
        tuner: "bayesian" (default), "random" or "hyperband" (Keras Tuner's oracles). The Bayesian
            one, while no trial is feasible, gives every other trial to the closest near miss (within
            every cost limit, over the accuracy drop) with fresh training settings.
        epochs: the most fine-tuning epochs any one step gets (default: optimize's `epochs`).
        timeout: seconds; no new trial starts after it.
        patience: stop once this many trials in a row, after a feasible one, brought no feasible
            trial at least 2% lower in the goal (Keras's `EarlyStopping`, over trials). Default:
            run every trial. Stopping only cuts the sequence short: the trials run are the ones a
            full search starts with.
    """

    max_accuracy_drop: float = 0.01
    speedup: float | None = None
    compression: float | None = None
    latency_ms: float | None = None
    tflite_bytes: int | None = None
    params: int | None = None
    trials: int = 20
    tuner: str = "bayesian"
    epochs: int | None = None
    timeout: float | None = None
    patience: int | None = None

    def __post_init__(self):
        drop = self.max_accuracy_drop
        if isinstance(drop, bool) or not isinstance(drop, numbers.Real) or not 0 <= drop <= 1:
            raise StrategyError(
                f"Expected `max_accuracy_drop` in [0, 1] (0.01 is one point). Received: max_accuracy_drop={drop!r}"
            )
        object.__setattr__(self, "max_accuracy_drop", float(drop))
        for name in ("speedup", "compression", "latency_ms", "timeout"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        for name in ("tflite_bytes", "params", "trials", "epochs", "patience"):
            object.__setattr__(self, name, _positive(name, getattr(self, name), integer=True))
        if self.trials is None:
            raise StrategyError("Expected `trials` to be a positive int. Received: trials=None")
        if self.tuner not in TUNERS:
            raise StrategyError(f"Expected `tuner` to be one of {TUNERS}. Received: tuner={self.tuner!r}")
        if not self.limits():
            raise StrategyError(
                "auto needs at least one budget: speedup=, compression=, latency_ms=, tflite_bytes= or params=, "
                "e.g. auto(speedup=2, max_accuracy_drop=0.01)."
            )

    def limits(self) -> dict[str, float]:
        """The cost limits that are set, by key."""
        return {key: getattr(self, key) for key in GOALS if getattr(self, key) is not None}

    @property
    def goal(self) -> str:
        """The cost minimized among trials that meet the budget: latency first, then size, then parameters."""
        limits = self.limits()
        if "speedup" in limits or "latency_ms" in limits:
            return "latency_ms"
        if "compression" in limits:
            return "gzip_bytes"
        if "tflite_bytes" in limits:
            return "tflite_bytes"
        return "params"

    @property
    def reads_the_file(self) -> bool:
        """Whether a limit is judged on the TFLite file (latency or size), not on the model's parameters alone."""
        return any(key != "params" for key in self.limits())

    @property
    def size_by_gzip(self) -> bool:
        return self.compression is not None

    def accuracy_drop(self, original: Cost, result: Cost, higher_is_better: bool) -> float:
        """How much worse `result`'s metric is than `original`'s (negative: better)."""
        if original.metric is None or result.metric is None:
            return 0.0
        return original.metric - result.metric if higher_is_better else result.metric - original.metric

    def misses(self, original: Cost, result: Cost, *, drop: float | None, skip: tuple[str, ...] = ()) -> dict[str, float]:
        """Limit -> how far `result` misses it, as a fraction of the limit (empty: within budget).

        `drop` None means not trained yet (accuracy unknown); `skip` names limits not judged.
        """
        missed: dict[str, float] = {}
        ratios = {"speedup": speedup, "compression": compression}
        for key, limit in self.limits().items():
            if key in skip:
                continue
            if key in ratios:
                ratio = ratios[key](original, result)
                if ratio < limit:
                    missed[key] = (limit - ratio) / limit
            elif getattr(result, key) > limit:
                missed[key] = (getattr(result, key) - limit) / limit
        if drop is not None and drop > self.max_accuracy_drop + 1e-12:
            missed["max_accuracy_drop"] = drop - self.max_accuracy_drop
        return missed

    def describe(self, original: Cost, result: Cost, missed: dict[str, float], drop: float | None) -> str:
        """One line: what `result` reaches against each missed limit."""
        parts = []
        for key in missed:
            if key == "speedup":
                parts.append(f"speedup {speedup(original, result):.2f}x < {self.speedup:g}x")
            elif key == "compression":
                parts.append(f"compression {compression(original, result):.2f}x < {self.compression:g}x")
            elif key == "max_accuracy_drop":
                parts.append(f"accuracy drop {drop:.4f} > {self.max_accuracy_drop:g}")
            else:
                parts.append(f"{key} {getattr(result, key):g} > {getattr(self, key):g}")
        return "; ".join(parts)
