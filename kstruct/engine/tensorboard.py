"""Per-epoch quantities for the History and, optionally, TensorBoard (Keras's own callback)."""

from __future__ import annotations

import importlib.util
import os
from typing import Callable, Mapping

import keras

from kstruct.errors import KstructError


class EpochScalars(keras.callbacks.Callback):
    """Adds named quantities of the model (its sparsity, say) to each epoch's logs.

    Callbacks share one logs dict per epoch, so the History and a TensorBoard
    callback later in the list record them with the loss and metrics.
    """

    def __init__(self, model: keras.Model, scalars: Mapping[str, Callable[[keras.Model], float]]):
        super().__init__()
        self.measured = model  # the model being trained, not a Distiller around it
        self.scalars = dict(scalars)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name, measure in self.scalars.items():
                logs[name] = float(measure(self.measured))


def epoch_callbacks(
    model: keras.Model,
    tensorboard_dir: str | os.PathLike | None,
    stage: str,
    scalars: Mapping[str, Callable[[keras.Model], float]] | None = None,
) -> list:
    """The callbacks every step's `fit` gets: the scalars, then TensorBoard when a folder is given."""
    callbacks = [EpochScalars(model, scalars or {})]
    if tensorboard_dir is not None:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in stage)
        callbacks.append(keras.callbacks.TensorBoard(log_dir=os.path.join(os.fspath(tensorboard_dir), safe)))
    return callbacks


def check_tensorboard() -> None:
    """Raises KstructError before any training when TensorBoard's package is missing
    (TensorFlow 2.21 no longer installs it, and Keras would fail mid-fit)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise KstructError(
            "`tensorboard_dir` needs the tensorboard package, which is not installed. "
            "Install it (pip install tensorboard) or leave tensorboard_dir out."
        )
