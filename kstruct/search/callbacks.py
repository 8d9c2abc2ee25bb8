"""Callbacks a trial trains with: stop one clearly behind the best, write the best epoch once."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np


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


def checkpoint_once(callbacks: list) -> list:
    """The callbacks with Keras Tuner's per-epoch checkpoint replaced by `BestWeightsAtEnd`."""
    return [
        BestWeightsAtEnd(c.objective, c.filepath) if type(c).__name__ == "SaveBestEpoch" else c
        for c in callbacks
    ]
