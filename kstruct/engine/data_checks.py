"""Up-front checks of the user's data, so bad values fail in one line before any training.

Without them, NaN in training data crashes int8 calibration natively, NaN in
validation data gives garbage figures, out-of-range labels give a long TensorFlow
traceback, and tokens outside an Embedding's vocabulary fail only at export.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kstruct.errors import DataError
from kstruct.engine.task import OutputTask, labels_by_output, loss_name, model_outputs
from kstruct.engine.training import TrainingData, check_label_dtype, model_inputs, name_arrays, pair_inputs

_SPARSE_LOSSES = ("sparsecategoricalcrossentropy",)


def _arrays(data: TrainingData) -> tuple[Any, Any]:
    """Arrays are checked in full; a dataset on its first rows, read once (`TrainingData.sample`)."""
    return data.sample()


def check_finite(data: TrainingData) -> None:
    """Raises DataError naming the array, and how many values, if any input or label is NaN or inf."""
    x, y = _arrays(data)
    for name, array in name_arrays(x, "inputs") + name_arrays(y, "labels"):
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.floating):
            continue
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if nan or inf:
            raise DataError(
                f"`{data.what}` {name} contain {nan} NaN and {inf} inf values (of {array.size}). Remove or "
                "impute them before optimizing: they make training diverge and int8 calibration fail."
            )


def check_input_dtypes(data: TrainingData, model: keras.Model) -> None:
    """Raises DataError if a numeric model input is fed strings or Python objects.

    Otherwise they fail only at int8 calibration, deep in the converter, after the
    original model has been measured.
    """
    x, _ = _arrays(data)
    for tensor, array, label in pair_inputs(model, x, data.what):
        dtype = np.asarray(array).dtype
        expects = str(getattr(tensor, "dtype", "float32"))
        if dtype.kind not in "biuf" and expects != "string":
            raise DataError(
                f"`{data.what}` {label} have dtype {dtype}, but model `{model.name}` expects {expects} inputs. "
                f"Convert them to numbers, e.g. x.astype('{expects}')."
            )


def check_labels(data: TrainingData, tasks: dict[str, OutputTask], model: keras.Model) -> None:
    """Raises DataError if sparse class labels are not integers in [0, classes) for their output."""
    _, y = _arrays(data)
    labels = labels_by_output(y, list(tasks))
    shapes = {name: tuple(t.shape) for name, t in zip(tasks, keras.tree.flatten(model_outputs(model)))}
    for name, spec in tasks.items():
        key = loss_name(spec.loss) or ""
        if key.lower().replace("_", "") not in _SPARSE_LOSSES or labels.get(name) is None:
            continue
        values = np.asarray(labels[name])
        classes = shapes[name][-1]
        bad = (values < 0) | (values >= classes) | (values != np.round(values))
        if bad.any():
            where = "" if len(tasks) == 1 else f" for output '{name}'"
            raise DataError(
                f"`{data.what}` labels{where} must be class indices in [0, {classes - 1}] "
                f"(sparse_categorical_crossentropy, {classes} output units). Received: labels in "
                f"[{values.min():g}, {values.max():g}], {int(bad.sum())} of them outside. Remap the labels, "
                "or give the output one unit per class."
            )


def _embeddings_by_input(model: keras.Model) -> list[tuple[int, keras.layers.Embedding]]:
    inputs = keras.tree.flatten(model_inputs(model))
    found = []
    for layer in _all_layers(model):
        if not isinstance(layer, keras.layers.Embedding):
            continue
        try:
            source = layer.input
        except (AttributeError, ValueError):
            continue
        for i, tensor in enumerate(inputs):
            if source is tensor:
                found.append((i, layer))
    if not found and len(inputs) == 1:  # e.g. an Embedding inside a nested model
        found = [(0, layer) for layer in _all_layers(model) if isinstance(layer, keras.layers.Embedding)][:1]
    return found


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def check_tokens(data: TrainingData, model: keras.Model) -> None:
    """Raises DataError if integer tokens fed to an Embedding fall outside [0, input_dim)."""
    x, _ = _arrays(data)
    pairs = pair_inputs(model, x, data.what)
    for index, layer in _embeddings_by_input(model):
        _, array, label = pairs[index]
        array = np.asarray(array)
        if array.size == 0 or not np.issubdtype(array.dtype, np.number):
            continue
        low, high = array.min(), array.max()
        if low < 0 or high >= layer.input_dim:
            raise DataError(
                f"`{data.what}` {label} hold token ids in [{low:g}, {high:g}], but Embedding `{layer.name}` "
                f"has input_dim={layer.input_dim} (ids 0..{layer.input_dim - 1}). Map unknown tokens to a "
                "reserved id, or raise input_dim."
            )


def check_data(data: TrainingData, tasks: dict[str, OutputTask], model: keras.Model) -> None:
    """All the value checks above, for one of `train_data` or `validation_data`."""
    if not data.is_arrays:  # arrays were checked as they came in (TrainingData)
        check_label_dtype(_arrays(data)[1], data.what)
    check_input_dtypes(data, model)
    check_finite(data)
    check_labels(data, tasks, model)
    check_tokens(data, model)
