"""Argument checks shared by every door (optimize's counts, every step's options): one rule each,
one message each, so `epochs=True` or `epochs=1.5` is refused the same way everywhere."""

from __future__ import annotations

import math
import numbers
from typing import Any

from kstruct.errors import DataError, KstructError, StrategyError

MAX_COUNT = 2**31 - 1  # the largest count TensorFlow holds (an int32); beyond it, an OverflowError deep inside


def positive_int_argument(name: str, value: Any, *, minimum: int = 1) -> int:
    """`value` as an int in [minimum, MAX_COUNT], or a StrategyError naming the argument: the one
    rule of every step for counts such as `epochs` and `samples`.

    A bool is refused (`epochs=True` would train one epoch) and so is a float
    (`epochs=1.5` would silently train one), whatever the step.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"  # optimize's words for its counts
        raise StrategyError(f"Expected `{name}` to be {kind}. Received: {name}={value!r}")
    if value < minimum:
        raise StrategyError(f"Expected `{name}` >= {minimum}. Received: {name}={value!r}")
    if value > MAX_COUNT:
        raise StrategyError(f"Expected `{name}` <= {MAX_COUNT}. Received: {name}={value!r}")
    return int(value)


def optional_positive_int_argument(name: str, value: Any, *, minimum: int = 1) -> int | None:
    """`positive_int_argument`, with None (use optimize's value) passed through."""
    return None if value is None else positive_int_argument(name, value, minimum=minimum)


def finite_number_argument(name: str, value: Any) -> Any:
    """`value` unchanged (so later messages show it as given), or a StrategyError unless it is a
    finite real number.

    A bare word in a strategy is a string, so without this `temperature=inf` would reach
    `float("inf")`, which no step can use and no strategy string can print.
    """
    try:
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number):
        raise StrategyError(f"Expected `{name}` to be a finite number. Received: {name}={value!r}")
    return value


def count_argument(name: str, value: Any, error: type[KstructError] = DataError) -> int:
    """`value` as an int in [1, MAX_COUNT], or `error` naming the argument: the rule for
    `epochs`, `batch_size` and `steps_per_epoch`.

    A bool (`epochs=True`) and a float (`epochs=1.5`, which `int()` would quietly make 1)
    are refused, and so is a count too big for TensorFlow (an OverflowError mid-training).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"Expected `{name}` to be a positive int. Received: {name}={value!r}")
    if not 1 <= value <= MAX_COUNT:
        raise error(f"Expected `{name}` to be a positive int of at most {MAX_COUNT}. Received: {name}={value!r}")
    return int(value)
