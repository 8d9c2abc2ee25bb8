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

import json
import os

import keras
import keras_tuner
import numpy as np

from kstruct.engine.distribute import session_kept
from kstruct.search._memory import rss_mb, trial_gradients_dropped
from kstruct.search.budget import Measurement
from kstruct.search.callbacks import BehindBestStopping
from kstruct.search.hypermodel import OverBudget, SearchStats, TrialSettings

CURVE_FILE = "kstruct_curve.json"
_PENALTY_CAP = 10.0


def infeasible_score(direction: str, excess: float) -> float:
    """The objective reported for an over-budget trial: below any non-negative metric
    when maximizing, above any plausible loss when minimizing; less over budget is
    less bad, which gives Bayesian search a slope toward the feasible region."""
    excess = min(max(excess, 0.0), _PENALTY_CAP)
    return -(1.0 + excess) if direction == "max" else 1e6 * (1.0 + excess)


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
            with trial_gradients_dropped():
                histories = super().run_trial(trial, *args, callbacks=callbacks, **kwargs)
        except OverBudget as over:
            return self._report(trial, None, over.measurement, trained=False, epochs=0, requested=requested)
        raw, curve, epochs = _best_epoch(histories, objective)
        with open(os.path.join(self.get_trial_dir(trial.trial_id), CURVE_FILE), "w") as f:
            json.dump(curve, f)
        return self._report(trial, raw, self.hypermodel.measurement, trained=True, epochs=epochs, requested=requested)

    def load_model(self, trial):
        with self.hypermodel.for_checkpoint():
            return super().load_model(trial)

    def _try_build(self, hp):
        with session_kept():  # Keras Tuner clears the session first: not the strategy scope the search runs in
            return super()._try_build(hp)

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
