"""What each output of a model predicts, so the report measures it the way that task is judged.

Argmax accuracy means nothing for a regression head or a single sigmoid unit. The
task of each output is read from its compiled loss (the strongest signal: it is
what the model was trained for), then from the output layer's activation and
units; `optimize(task=...)` overrides both when neither can tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kstruct.errors import KstructError

TASKS = ("classification", "binary", "regression")

# Loss names (lower case, underscores removed) that fix the task.
_CLASSIFICATION_LOSSES = (
    "sparsecategoricalcrossentropy",
    "categoricalcrossentropy",
    "categoricalfocalcrossentropy",
    "categoricalhinge",
)
_BINARY_LOSSES = ("binarycrossentropy", "binaryfocalcrossentropy", "hinge", "squaredhinge")


@dataclass
class OutputTask:
    """The task of one output and how it is scored.

    Attributes:
        output: the output's name (`model.output_names`, or the key of a dict output).
        task: one of `TASKS`.
        metric: the name of the figure the report gives for it: "accuracy",
            "thresholded accuracy", or the compiled loss's name for regression.
        loss: the compiled loss of this output (used to score regression).
        threshold: the decision threshold of a binary output (0.5 on
            probabilities, 0.0 on logits).
    """

    output: str
    task: str
    metric: str
    loss: Any = None
    threshold: float = 0.5


def loss_name(loss: Any) -> str | None:
    if loss is None:
        return None
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            return loss
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__
    return str(name)


def _from_logits(loss: Any) -> bool:
    if isinstance(loss, keras.losses.Loss):
        return bool(loss.get_config().get("from_logits", False))
    return False


def _per_output_losses(loss: Any, names: list[str]) -> dict[str, Any]:
    """A loss given as Keras accepts it (one, a list in output order, a dict by name), by output name."""
    if isinstance(loss, dict):
        return {name: loss.get(name) for name in names}
    if isinstance(loss, (list, tuple)):
        return dict(zip(names, loss))
    return {name: loss for name in names}


def _output_activation(model: keras.Model, name: str) -> str | None:
    try:
        layer = model.get_layer(name)
    except ValueError:
        return None
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None)


def model_outputs(model: keras.Model) -> Any:
    """`model.output` (a dict or list for multi-output functional models); Sequential models have one output."""
    try:
        return model.output
    except (AttributeError, ValueError):
        outputs = list(model.outputs)
        return outputs[0] if len(outputs) == 1 else outputs


def output_names(model: keras.Model) -> list[str]:
    """The names of the model's outputs in `keras.tree.flatten` order (the order TFLite files keep)."""
    structure = model_outputs(model)
    if isinstance(structure, dict):
        return [str(path[-1]) for path, _ in keras.tree.flatten_with_path(structure)]
    names = getattr(model, "output_names", None)  # Sequential models have none: their last layer is the output
    return list(names) if names else [model.layers[-1].name]


def labels_by_output(y: Any, names: list[str]) -> dict[str, Any]:
    """`y` (one array, a list in output order, or a dict by output name) as a dict by output name."""
    if y is None:
        return {name: None for name in names}
    if isinstance(y, dict):
        return {name: y.get(name) for name in names}
    if isinstance(y, (list, tuple)) and len(names) > 1:
        return dict(zip(names, y))
    return {names[0]: y}


def _infer_task(loss_key: str, activation: str | None, units: int | None) -> str:
    """A loss that names a task decides; then the output activation; then the units."""
    if loss_key in _CLASSIFICATION_LOSSES:
        return "classification"
    if loss_key in _BINARY_LOSSES:
        return "binary"
    if activation == "softmax":
        return "classification"
    if activation == "sigmoid":
        return "binary"
    if loss_key:  # a regression loss, or the user's own, on an output with no squashing activation
        return "regression"
    return "classification" if (units or 1) > 1 else "regression"  # no loss known: logits, or one value


def detect_tasks(model: keras.Model, task: str | dict[str, str] | None = None, loss: Any = None) -> dict[str, OutputTask]:
    """The task of every output of `model`, by output name.

    Args:
        model: the user's model (compiled, or `loss` given).
        task: an override: one of `TASKS` for every output, or a dict by output name.
        loss: the loss `optimize` compiles with when the model was not compiled.

    Raises:
        KstructError: an unknown task name or output name in `task`.
    """
    names = output_names(model)
    overrides = task if isinstance(task, dict) else {name: task for name in names}
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise KstructError(f"Expected `task` keys among the model's outputs {names}. Received: {unknown}")
    for value in overrides.values():
        if value is not None and value not in TASKS:
            raise KstructError(f"Expected `task` to be one of {TASKS}. Received: task={value!r}")
    compiled_loss = getattr(model, "loss", None) if model.compiled else None
    losses = _per_output_losses(compiled_loss if loss is None else loss, names)
    shapes = {name: tuple(t.shape) for name, t in zip(names, keras.tree.flatten(model_outputs(model)))}
    tasks = {}
    for name in names:
        out_loss = losses.get(name)
        key = (loss_name(out_loss) or "").lower().replace("_", "")
        activation = _output_activation(model, name)
        kind = overrides.get(name) or _infer_task(key, activation, shapes[name][-1])
        logits = kind == "binary" and (_from_logits(out_loss) or activation not in (None, "sigmoid"))
        metric = {"classification": "accuracy", "binary": "thresholded accuracy"}.get(kind) or (
            loss_name(out_loss) or "mean_squared_error"
        )
        tasks[name] = OutputTask(name, kind, metric, out_loss, threshold=0.0 if logits else 0.5)
    return tasks


def _loss_value(loss: Any, y: np.ndarray, predictions: np.ndarray) -> float:
    fn = keras.losses.get(loss) if isinstance(loss, str) or loss is None else loss
    if fn is None:
        fn = keras.losses.mean_squared_error
    value = fn(keras.ops.convert_to_tensor(y.astype("float32")), keras.ops.convert_to_tensor(predictions))
    return float(np.mean(keras.ops.convert_to_numpy(value)))


def _element_labels(y: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Int labels of `predictions.shape[:-1]` from int or one-hot `y`."""
    if y.shape == predictions.shape and predictions.shape[-1] > 1:
        return y.argmax(-1)
    return y.reshape(predictions.shape[:-1])


def score(spec: OutputTask, keras_out: np.ndarray, lite_out: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
    """The report's figures for one output: its metric on both sides, agreement and differences.

    Classification also gets the mean top-1 margin of the Keras outputs (top-1 minus
    top-2): on a low-confidence model, a tiny numeric difference flips the argmax,
    so agreement alone misleads.
    """
    diff = np.abs(keras_out - lite_out)
    figures: dict[str, Any] = {
        "task": spec.task,
        "metric": spec.metric,
        "keras": None,
        "tflite": None,
        "agreement": None,
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
    }
    if spec.task == "classification":
        figures["agreement"] = float(np.mean(keras_out.argmax(-1) == lite_out.argmax(-1)))
        top2 = np.sort(keras_out, axis=-1)[..., -2:] if keras_out.shape[-1] > 1 else None
        figures["mean_top1_margin"] = None if top2 is None else float(np.mean(top2[..., 1] - top2[..., 0]))
        if y is not None:
            labels = _element_labels(np.asarray(y), keras_out)
            figures["keras"] = float(np.mean(keras_out.argmax(-1) == labels))
            figures["tflite"] = float(np.mean(lite_out.argmax(-1) == labels))
    elif spec.task == "binary":
        k, t = keras_out > spec.threshold, lite_out > spec.threshold
        figures["agreement"] = float(np.mean(k == t))
        if y is not None:
            truth = np.asarray(y).reshape(keras_out.shape) > 0.5
            figures["keras"] = float(np.mean(k == truth))
            figures["tflite"] = float(np.mean(t == truth))
    elif y is not None:
        y = np.asarray(y).reshape(keras_out.shape) if np.asarray(y).size == keras_out.size else np.asarray(y)
        figures["keras"] = _loss_value(spec.loss, y, keras_out)
        figures["tflite"] = _loss_value(spec.loss, y, lite_out)
    return figures
