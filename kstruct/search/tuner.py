"""Keras Tuner's tuners, each trial measured on the target before it trains.

`BudgetedRandomSearch`, `BudgetedBayesianOptimization` and `BudgetedHyperband` are
Keras Tuner's own classes with one change, in `run_trial`: the freshly built model
is converted for the target and timed on LiteRT before training (size and latency
depend on the structure, not on the weight values), and a trial over budget
reports the worst objective, so every oracle ranks it last without knowing about
budgets. The oracles are untouched.

Savings, since a search's time should go into training: a trial over budget is
recorded without being trained at all; each trial is converted once; the best
epoch's weights are written once, when training ends, instead of at every better
epoch; and for random and Bayesian search a callback stops a trial whose
validation curve falls clearly behind the best feasible trial's curve.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Iterator

import keras
import keras_tuner
import numpy as np

from kstruct.search.budget import Budget, Measurement, measure

CURVE_FILE = "kstruct_curve.json"
_PENALTY_CAP = 10.0


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MiB; falls back to the peak."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def infeasible_score(direction: str, excess: float) -> float:
    """The objective reported for an over-budget trial: below any non-negative metric
    when maximizing, above any plausible loss when minimizing; less over budget is
    less bad, which gives Bayesian search a slope toward the feasible region."""
    excess = min(max(excess, 0.0), _PENALTY_CAP)
    return -(1.0 + excess) if direction == "max" else 1e6 * (1.0 + excess)


class BehindBestStopping(keras.callbacks.Callback):
    """Stops training when the monitored value is clearly behind a reference curve.

    Args:
        monitor: the objective's name in the epoch logs (e.g. "val_accuracy").
        direction: "max" or "min".
        reference: the best feasible trial's value after each epoch.
        margin: relative gap that counts as clearly behind (0.1: 10% worse).
        patience: how many epochs in a row the trial must be behind.
    """

    def __init__(self, monitor: str, direction: str, reference: list[float], margin: float = 0.1, patience: int = 1):
        super().__init__()
        self.monitor = monitor
        self.direction = direction
        self.reference = [float(v) for v in reference]
        self.margin = margin
        self.patience = patience
        self.behind = 0
        self.stopped_epoch: int | None = None

    def is_behind(self, value: float, reference: float) -> bool:
        if self.direction == "max":
            return value < reference - self.margin * abs(reference)
        return value > reference + self.margin * abs(reference)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        last_epoch = (self.params or {}).get("epochs", epoch + 2) - 1
        if self.monitor not in logs or epoch >= len(self.reference) or epoch >= last_epoch:
            return
        self.behind = self.behind + 1 if self.is_behind(float(logs[self.monitor]), self.reference[epoch]) else 0
        if self.behind >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True


@dataclass
class SearchStats:
    """Where this process's search time went (for the overhead figure), and its memory."""

    train_seconds: float = 0.0
    measure_seconds: float = 0.0
    build_seconds: float = 0.0
    trials_run: int = 0
    rss_after_trial: list[float] = field(default_factory=list)


class _OverBudget(Exception):
    def __init__(self, measurement: Measurement):
        super().__init__("over budget before training")
        self.measurement = measurement


class BestWeightsAtEnd(keras.callbacks.Callback):
    """Stands in for Keras Tuner's best-epoch checkpoint: keeps the best epoch's
    weights in memory and writes them once, when training ends, leaving the model at
    its best epoch. Why: a trial killed mid-way runs again from its start on resume,
    so the file is only needed once the trial is done; writing it at every better
    epoch cost a save per epoch."""

    def __init__(self, objective: keras_tuner.Objective, filepath: str):
        super().__init__()
        self.objective = objective
        self.filepath = filepath
        self.best_value: float | None = None
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not self.objective.has_value(logs):  # judged after fit: keep the last epoch
            self.best_weights = self.model.get_weights()
            return
        value = self.objective.get_value(logs)
        if self.best_value is None or self.objective.better_than(value, self.best_value):
            self.best_value = value
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            self.model.save_weights(self.filepath)
            self.best_weights = None


def _checkpoint_once(callbacks: list) -> list:
    """The callbacks with Keras Tuner's per-epoch checkpoint replaced by `BestWeightsAtEnd`."""
    return [
        BestWeightsAtEnd(c.objective, c.filepath) if type(c).__name__ == "SaveBestEpoch" else c
        for c in callbacks
    ]


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
            raise _OverBudget(self.measurement)
        kwargs["callbacks"] = _checkpoint_once(list(kwargs.get("callbacks") or []))
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


@contextlib.contextmanager
def _trial_gradients_dropped() -> Iterator[None]:
    """Drops the gradient functions a trial registered with TensorFlow once it ends.

    Why: tf.custom_gradient inside a traced function registers its gradient in a
    process-wide registry and never removes it, and Keras's optimizer step does that
    for every model it trains (through tf.distribute's all_reduce); the entry holds
    the whole traced training graph, which kept about 8 MiB per trained trial alive
    (the same happens to any loop of `fit` on new models). A trial's graphs are dead
    once it ends, so nothing needs them.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in [n for n in registry if n.startswith("CustomGradient-") and n not in before]:
                del registry[name]


def _best_epoch(histories, objective) -> tuple[float, list[float], int]:
    """(objective at the best epoch averaged over executions, first curve, epochs trained)."""
    histories = histories if isinstance(histories, list) else [histories]
    bests, curve, epochs = [], [], 0
    for history in histories:
        values = history.history.get(objective.name) if isinstance(history, keras.callbacks.History) else None
        if not values:
            logged = sorted(history.history) if isinstance(history, keras.callbacks.History) else history
            raise keras_tuner.errors.FatalValueError(
                f"The objective {objective.name!r} is not among the metrics training logs: {logged}. "
                "Pass objective= one of them (validation metrics need validation data)."
            )
        values = [float(v) for v in values]
        bests.append(max(values) if objective.direction == "max" else min(values))
        if not curve:
            curve, epochs = values, len(values)
    return float(np.mean(bests)), curve, epochs


class _BudgetMixin:
    """The `run_trial` shared by the three budgeted tuners."""

    def _init_budget(self, settings: TrialSettings, stats: SearchStats) -> None:
        self.settings = settings
        self.stats = stats

    def _reference_curve(self) -> list[float] | None:
        best = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
        if not best or not best[0].metrics.exists("feasible") or best[0].metrics.get_last_value("feasible") < 0.5:
            return None
        path = os.path.join(self.get_trial_dir(best[0].trial_id), CURVE_FILE)
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def run_trial(self, trial, *args, **kwargs):
        objective = self.oracle.objective
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if self.settings.early_stopping:
            reference = self._reference_curve()
            if reference:
                callbacks.append(BehindBestStopping(objective.name, objective.direction, reference, self.settings.margin))
        values = trial.hyperparameters.values  # Hyperband sets its own epochs per round
        requested = int(values.get("tuner/epochs", kwargs.get("epochs", 1))) - int(values.get("tuner/initial_epoch", 0))
        self.hypermodel.measurement = None
        try:
            with _trial_gradients_dropped():
                histories = super().run_trial(trial, *args, callbacks=callbacks, **kwargs)
        except _OverBudget as over:
            return self._report(trial, None, over.measurement, trained=False, epochs=0, requested=requested)
        raw, curve, epochs = _best_epoch(histories, objective)
        with open(os.path.join(self.get_trial_dir(trial.trial_id), CURVE_FILE), "w") as f:
            json.dump(curve, f)
        return self._report(trial, raw, self.hypermodel.measurement, trained=True, epochs=epochs, requested=requested)

    def load_model(self, trial):
        with self.hypermodel.for_checkpoint():
            return super().load_model(trial)

    def _build_hypermodel(self, hp):
        if "tuner/trial_id" not in hp.values:
            return super()._build_hypermodel(hp)
        with self.hypermodel.for_checkpoint():  # Hyperband continues a trial from its checkpoint
            return super()._build_hypermodel(hp)

    def _report(self, trial, raw, measurement: Measurement, *, trained: bool, epochs: int, requested: int) -> dict:
        objective = self.oracle.objective
        feasible = self.settings.budget.fits(measurement)
        score = raw if feasible else infeasible_score(objective.direction, self.settings.budget.excess(measurement))
        self.stats.trials_run += 1
        self.stats.rss_after_trial.append(rss_mb())
        report = {
            objective.name: float(score),
            "tflite_bytes": float(measurement.tflite_bytes),
            "latency_ms": float(measurement.latency_ms),
            "params": float(measurement.params),
            "feasible": 1.0 if feasible else 0.0,
            "trained": 1.0 if trained else 0.0,
            "epochs": float(epochs),
            "stopped_early": 1.0 if trained and epochs < requested else 0.0,
            "rss_mb": float(self.stats.rss_after_trial[-1]),
        }
        if raw is not None:
            report["measured_objective"] = float(raw)
        return report

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # Keras Tuner imports tensorboard on every trial under the TensorFlow backend,
        # and TensorFlow no longer installs it: only do so when a TensorBoard callback is there.
        if any(type(c).__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)


class BudgetedRandomSearch(_BudgetMixin, keras_tuner.RandomSearch):
    """`keras_tuner.RandomSearch`, each trial measured against a budget."""


class BudgetedBayesianOptimization(_BudgetMixin, keras_tuner.BayesianOptimization):
    """`keras_tuner.BayesianOptimization`, each trial measured against a budget."""


class BudgetedHyperband(_BudgetMixin, keras_tuner.Hyperband):
    """`keras_tuner.Hyperband`, each trial measured against a budget."""


TUNERS = {
    "random": BudgetedRandomSearch,
    "bayesian": BudgetedBayesianOptimization,
    "hyperband": BudgetedHyperband,
}
TUNER_NAMES = tuple(TUNERS)
