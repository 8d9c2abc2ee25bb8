"""`prepare_data`: the user's data made ready once, checked once, with validation held out by one rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from kstruct.engine.data_checks import check_data
from kstruct.engine.task import OutputTask
from kstruct.engine.training import TrainingData, check_input_count, validation_split


@dataclass
class PreparedData:
    """Training and validation data, checked against the model.

    Attributes:
        train: what the steps fit on.
        validation: what every stage is measured on.
        validation_note: where `validation` came from (for the report).
    """

    train: TrainingData
    validation: TrainingData
    validation_note: str


def prepare_data(
    model: keras.Model,
    train_data: Any,
    validation_data: Any = None,
    *,
    tasks: dict[str, OutputTask],
    batch_size: int = 32,
    steps_per_epoch: int | None = None,
) -> PreparedData:
    """Wraps, checks and splits the data before any work, so bad data fails in one line first.

    In order: the number of inputs, the shapes against the model's inputs, the values (NaN,
    labels out of range, token ids beyond an Embedding) on one sample read once, then the
    validation rule (`validation_split`), the same checks on given validation data, and an
    infinite dataset without `steps_per_epoch`. Errors name `train_data` or `validation_data`.

    Raises:
        DataError: the first problem found.
    """
    check_input_count(model, train_data, "train_data")
    train = TrainingData(train_data, batch_size=batch_size, steps=steps_per_epoch)
    train.check_fits(model)
    check_data(train, tasks, model)  # before any hold-out, so errors name `train_data`
    if validation_data is not None:
        check_input_count(model, validation_data, "validation_data")
    train, validation, note = validation_split(train, validation_data, batch_size=batch_size)
    if validation_data is not None:
        validation.check_fits(model)
        check_data(validation, tasks, model)
    train.steps_per_epoch()  # an infinite dataset without steps_per_epoch fails here, before any work
    return PreparedData(train, validation, note)
