"""Deployment budgets, and measuring a trial's model against one on the LiteRT runtime."""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping

import keras
import numpy as np

from kstruct.errors import KstructError
from kstruct.engine.params import count_params

BUDGET_KEYS = ("tflite_bytes", "latency_ms", "params")
_UNITS = {"tflite_bytes": " bytes", "latency_ms": " ms", "params": " parameters"}


class SearchError(KstructError, ValueError):
    """A search was asked for something it cannot do (bad budget, changed settings on resume)."""


class BudgetError(SearchError):
    """No trial of a finished search met the budget. `result` holds the search's trials."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Measurement:
    """What a trial's model costs on the target: file size, latency, parameters."""

    tflite_bytes: int
    latency_ms: float
    params: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """Upper limits on a model's deployment cost; None means no limit."""

    tflite_bytes: int | None = None
    latency_ms: float | None = None
    params: int | None = None

    @classmethod
    def from_mapping(cls, budget: Mapping[str, float] | "Budget" | None) -> "Budget":
        """Checks the keys and values of a `{"latency_ms": 0.5, ...}` mapping."""
        if budget is None:
            return cls()
        if isinstance(budget, Budget):
            return budget
        if not isinstance(budget, Mapping):
            raise SearchError(f"Expected `budget` as a dict with keys {BUDGET_KEYS}. Received: {budget!r}")
        unknown = [k for k in budget if k not in BUDGET_KEYS]
        if unknown:
            raise SearchError(
                f"Unknown budget key {', '.join(repr(k) for k in unknown)}. Valid keys: {', '.join(BUDGET_KEYS)}"
            )
        values = {}
        for key, value in budget.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SearchError(f"Expected budget {key} to be a positive number. Received: {key}={value!r}")
            values[key] = int(value) if key in ("tflite_bytes", "params") else float(value)
        return cls(**values)

    def limits(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def excess(self, measured: Measurement) -> float:
        """How far over budget, as the largest fraction over a limit (0.0 when within)."""
        values = measured.as_dict()
        return max([0.0] + [values[k] / limit - 1.0 for k, limit in self.limits().items()])

    def fits(self, measured: Measurement) -> bool:
        values = measured.as_dict()
        return all(values[k] <= limit for k, limit in self.limits().items())

    def describe(self) -> str:
        limits = self.limits()
        if not limits:
            return "no budget"
        return ", ".join(f"{k} <= {_number(v)}" for k, v in limits.items())

    def __str__(self) -> str:
        return self.describe()


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def measure(
    model: keras.Model,
    target: str,
    representative_data: np.ndarray | None,
    *,
    latency_runs: int = 50,
) -> tuple[Measurement, bytes]:
    """Converts `model` for `target` and times it on LiteRT (CPU, one thread).

    Size and latency depend on the structure, not on the weight values, except where
    the converter treats degenerate values specially; `with_trained_layout` removes
    that, so a freshly built model measures as its trained self will (one conversion
    per trial, before training).
    """
    import tflite_export

    with with_trained_layout(model):
        blob = tflite_export.convert(model, target, representative_data)
    timing = tflite_export.benchmark(blob, threads=1, runs=latency_runs, warmup=5)
    return Measurement(len(blob), float(timing.median_ms), count_params(model)), blob


@contextlib.contextmanager
def with_trained_layout(model: keras.Model) -> Iterator[None]:
    """Gives every float weight whose entries are all equal (fresh biases, BatchNorm
    statistics) distinct values for the block, then restores them.

    Why: the TFLite converter drops an all-zero bias, merges identical buffers and
    names a constant of equal entries differently; an untrained model's file came out
    up to 15% smaller than the same structure trained (tests/search/test_run.py).
    """
    rng = np.random.default_rng(0)
    saved = []
    for variable in model.weights:
        if not np.issubdtype(np.dtype(variable.dtype), np.floating):
            continue
        value = keras.ops.convert_to_numpy(variable)
        flat = value.reshape(-1)
        if flat.size == 0 or not np.all(flat == flat[0]):
            continue
        scale = float(np.abs(flat[0])) or 1.0
        variable.assign(value + scale * rng.uniform(0.01, 0.1, value.shape).astype(value.dtype))
        saved.append((variable, value))
    try:
        yield
    finally:
        for variable, value in saved:
            variable.assign(value)


def smallest_seen(measurements: list[Measurement], budget: Budget) -> str:
    """For the error message: the least of each budgeted quantity over all trials."""
    if not measurements:
        return "no trial was measured"
    keys = list(budget.limits()) or list(BUDGET_KEYS)
    parts = []
    for key in keys:
        best = min(getattr(m, key) for m in measurements)
        parts.append(f"{key}={best:.4g}" if isinstance(best, float) else f"{key}={best}")
    return ", ".join(parts)
