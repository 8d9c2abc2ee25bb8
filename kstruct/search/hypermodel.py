"""The HyperModel side of a search: the user's space as a HyperModel, measured before it trains."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import keras
import keras_tuner
import numpy as np

from kstruct.search.budget import Budget, Measurement, SearchError, measure
from kstruct.search.callbacks import checkpoint_once


@dataclass
class SearchStats:
    """Where this process's search time went (for the overhead figure), and its memory."""

    train_seconds: float = 0.0
    measure_seconds: float = 0.0
    build_seconds: float = 0.0
    trials_run: int = 0
    rss_after_trial: list[float] = field(default_factory=list)


class OverBudget(Exception):
    def __init__(self, measurement: Measurement):
        super().__init__("over budget before training")
        self.measurement = measurement


class MeasuredHyperModel(keras_tuner.HyperModel):
    """Wraps the user's HyperModel: measures each built model before it trains, skips
    training one over budget (with `screen`), and times building, measuring and `fit`."""

    def __init__(self, hypermodel: keras_tuner.HyperModel, settings: "TrialSettings", stats: SearchStats):
        super().__init__(name=getattr(hypermodel, "name", None))
        self.inner = hypermodel
        self.settings = settings
        self.stats = stats
        self.measurement: Measurement | None = None
        self.loading_checkpoint = False

    def declare_hyperparameters(self, hp):
        self.inner.declare_hyperparameters(hp)

    def build(self, hp):
        start = time.perf_counter()
        try:
            model = self.inner.build(hp)
            optimizer = getattr(model, "optimizer", None)
            if self.loading_checkpoint and isinstance(optimizer, keras.optimizers.Optimizer) and not optimizer.built:
                # A checkpoint holds the optimizer's state, which Keras skips (with a
                # warning) when loading into an optimizer that has no slots yet.
                optimizer.build(model.trainable_variables)
            return model
        finally:
            self.stats.build_seconds += time.perf_counter() - start

    @contextlib.contextmanager
    def for_checkpoint(self) -> Iterator[None]:
        """Models built in the block get a checkpoint loaded into them next."""
        self.loading_checkpoint = True
        try:
            yield
        finally:
            self.loading_checkpoint = False

    def fit(self, hp, model, *args, **kwargs):
        settings = self.settings
        start = time.perf_counter()
        try:
            self.measurement, _ = measure(model, settings.target, settings.representative,
                                          latency_runs=settings.latency_runs)
        except Exception as error:
            raise keras_tuner.errors.FailedTrialError(
                f"could not convert the trial's model for target={settings.target!r}: {error}"
            ) from error
        finally:
            self.stats.measure_seconds += time.perf_counter() - start
        if settings.screen and not settings.budget.fits(self.measurement):
            raise OverBudget(self.measurement)
        kwargs["callbacks"] = checkpoint_once(list(kwargs.get("callbacks") or []))
        start = time.perf_counter()
        try:
            return self.inner.fit(hp, model, *args, **kwargs)
        finally:
            self.stats.train_seconds += time.perf_counter() - start


@dataclass
class TrialSettings:
    budget: Budget
    target: str
    representative: np.ndarray | None
    early_stopping: bool = True
    screen: bool = True
    margin: float = 0.1
    latency_runs: int = 50


def as_hypermodel(space, target: str) -> tuple[keras_tuner.HyperModel, str]:
    """The space as a HyperModel, and an id of it for the settings check on resume."""
    from kstruct.search.space import SearchSpace, space as derive

    if isinstance(space, keras.Model):
        space = derive(space, target=target)
    if isinstance(space, SearchSpace):
        return space, f"derived:{space.signature}"
    if isinstance(space, keras_tuner.HyperModel):
        return space, f"hypermodel:{type(space).__module__}.{type(space).__qualname__}"
    if callable(space):
        name = getattr(space, "__qualname__", type(space).__name__)
        return _FunctionHyperModel(space), f"function:{name}"
    raise SearchError(
        "Expected `space` to be a keras_tuner.HyperModel, a build(hp) function or a Keras model. "
        f"Received: an object of type {type(space).__name__}"
    )


class _FunctionHyperModel(keras_tuner.HyperModel):
    """A user's `build(hp)` function as a HyperModel."""

    def __init__(self, function: Callable):
        super().__init__(name=getattr(function, "__name__", None))
        self.function = function

    def build(self, hp):
        return self.function(hp)
