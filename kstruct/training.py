"""The user's data in any form `fit` accepts, and the context a step trains in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from kstruct.errors import DataError, KstructError

DEFAULT_EPOCHS = 2


def _is_dataset(data) -> bool:
    # tf.data without importing TensorFlow at module import time.
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "element_spec")


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass
class TrainingData:
    """Data for `fit` in one of three forms: `(x, y)` arrays, a `tf.data.Dataset`, a `keras.utils.PyDataset`.

    Datasets and PyDatasets must yield `(x, y)` batches; arrays are batched with `batch_size`.
    """

    source: Any
    batch_size: int = 32
    what: str = "train_data"

    def __post_init__(self):
        data = self.source
        if isinstance(data, (tuple, list)) and len(data) == 2:
            x, y = (np.asarray(v) for v in data)
            if len(x) != len(y):
                raise DataError(f"`{self.what}` has {len(x)} inputs but {len(y)} labels; they must match.")
            if len(x) == 0:
                raise DataError(f"`{self.what}` is empty.")
            self.source = (x, y)
        elif not (_is_dataset(data) or isinstance(data, keras.utils.PyDataset)):
            raise DataError(
                f"Expected `{self.what}` as (x, y) arrays, a tf.data.Dataset or a keras.utils.PyDataset. "
                f"Received: an object of type {type(data).__name__}"
            )

    @property
    def is_arrays(self) -> bool:
        return isinstance(self.source, tuple)

    def fit_arguments(self) -> dict:
        if self.is_arrays:
            x, y = self.source
            return {"x": x, "y": y, "batch_size": self.batch_size}
        return {"x": self.source, "shuffle": False}  # datasets shuffle themselves

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch; pruning schedules are derived from it."""
        if self.is_arrays:
            return math.ceil(len(self.source[0]) / self.batch_size)
        if isinstance(self.source, keras.utils.PyDataset):
            return len(self.source)
        cardinality = int(self.source.cardinality())
        if cardinality >= 0:
            return cardinality
        return sum(1 for _ in self.source)  # unknown cardinality: count once

    def arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The data as numpy arrays (up to `limit` rows), for evaluation on the TFLite runtime."""
        if self.is_arrays:
            x, y = self.source
            return (x[:limit], y[:limit]) if limit else (x, y)
        xs, ys, count = [], [], 0
        batches = (self.source[i] for i in range(len(self.source))) if isinstance(
            self.source, keras.utils.PyDataset
        ) else self.source
        for batch in batches:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise DataError(f"`{self.what}` must yield (x, y) batches. Received a batch of type {type(batch).__name__}")
            x, y = (keras.ops.convert_to_numpy(v) for v in batch[:2])
            xs.append(x)
            ys.append(y)
            count += len(x)
            if limit and count >= limit:
                break
        x, y = np.concatenate(xs), np.concatenate(ys)
        return (x[:limit], y[:limit]) if limit else (x, y)

    def check_fits(self, model: keras.Model) -> None:
        """Raises DataError unless the inputs have the shape the model expects."""
        x, _ = self.arrays(limit=2)
        expected = tuple(model.inputs[0].shape)
        got = tuple(x.shape)
        fits = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected[1:], got[1:]))
        if not fits:
            raise DataError(
                f"`{self.what}` inputs have shape {_shape_text((None,) + got[1:])}, "
                f"but model `{model.name}` expects {_shape_text(expected)}. Reshape the data to match."
            )


def split_validation(data: TrainingData, fraction: float = 0.1) -> tuple[TrainingData, TrainingData]:
    """Holds out the last `fraction` of array data for validation when the user gave none."""
    x, y = data.source
    n_val = max(1, int(len(x) * fraction))
    return (
        TrainingData((x[:-n_val], y[:-n_val]), data.batch_size, data.what),
        TrainingData((x[-n_val:], y[-n_val:]), data.batch_size, "validation (held out of train_data)"),
    )


@dataclass
class StepContext:
    """What a step needs to train and measure: data, epochs, target and how to compile.

    Attributes:
        train: training data.
        validation: validation data (held out of `train` when the user gave none).
        epochs: epochs per training step unless the step sets its own.
        target: the TFLite target name the strategy exports to.
        compile_source: the user's compiled model, whose loss/optimizer/metrics new
            models copy; None when `loss` is given instead.
        loss, optimizer, metrics: used when the user's model was not compiled.
        verbose: Keras progress bar setting for `fit`.
        teacher: the model steps distill from (the one given to `optimize`, or its `teacher=`).
        tensorboard_dir: if set, every `fit` logs there (one run folder per stage).
        stage: the name of the step now running (the TensorBoard run folder).
        histories: `History.history` of every `fit` so far, in order, for the report.
    """

    train: TrainingData
    validation: TrainingData
    epochs: int = DEFAULT_EPOCHS
    target: str = "int8"
    compile_source: keras.Model | None = None
    loss: Any = None
    optimizer: Any = "adam"
    metrics: Any = None
    verbose: int | str = "auto"
    teacher: keras.Model | None = None
    tensorboard_dir: str | None = None
    stage: str = "step"
    histories: list[dict[str, list[float]]] = field(default_factory=list)

    def steps(self, epochs: int | None = None) -> int:
        """Optimizer steps in `epochs` (default: the context's epochs)."""
        return (epochs or self.epochs) * self.train.steps_per_epoch()

    def compile(self, model: keras.Model) -> keras.Model:
        """Compiles `model` like the user's model (fresh optimizer state); returns it."""
        from kstruct._graph import copy_compile

        if self.compile_source is not None and self.compile_source.compiled:
            copy_compile(self.compile_source, model)
        else:
            optimizer = keras.optimizers.get(self.optimizer)
            model.compile(optimizer=optimizer, loss=self.loss, metrics=self.metrics or ["accuracy"])
        return model

    def fit(
        self,
        model: keras.Model,
        epochs: int | None = None,
        callbacks=None,
        *,
        distill: bool = False,
        temperature: float | None = None,
        alpha: float | None = None,
    ) -> keras.callbacks.History:
        """Compiles and trains `model` on the training data, with Keras's own progress bar.

        With `distill=True` the model learns from the context's teacher as well as the
        labels (a `keras.distillation.Distiller` around it), so any training step gets
        distillation by passing the flag. The History is kept for the report.
        """
        self.compile(model)
        trainer = model
        if distill:
            from kstruct import distillation

            if self.teacher is None:
                raise KstructError("Distillation needs a teacher; `optimize` sets it (its `teacher=` argument).")
            trainer = distillation.distiller(
                self.teacher,
                model,
                temperature=distillation.DEFAULT_TEMPERATURE if temperature is None else temperature,
                alpha=distillation.DEFAULT_ALPHA if alpha is None else alpha,
                sample=self.train.arrays(limit=16)[0],
            )
        from kstruct._tensorboard import epoch_callbacks

        history = trainer.fit(
            **self.train.fit_arguments(),
            epochs=epochs or self.epochs,
            callbacks=[*(callbacks or []), *epoch_callbacks(model, self.tensorboard_dir, self.stage)],
            verbose=self.verbose,
        )
        self.histories.append({key: [float(v) for v in values] for key, values in history.history.items()})
        return history

    def representative_inputs(self, count: int = 200) -> np.ndarray:
        """Training inputs for int8 calibration."""
        return self.train.arrays(limit=count)[0]
