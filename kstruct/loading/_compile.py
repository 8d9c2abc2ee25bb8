"""Compile settings of a tf_keras (Keras 2) file, translated for Keras 3.

Keras 3 reads a Keras 2 compile config, but not faithfully: `steps_per_execution: null`
breaks its first `predict`, a loss written with `reduction: "auto"` is refused, an optimizer
config carries Keras 2 keys (`is_legacy_optimizer`, `jit_compile`) and the class name
`Custom>Adam`, and a metric name from an `.h5` training config is left a string its
evaluation calls. So the model is loaded uncompiled and compiled here, from data: each
optimizer, loss or metric is looked up by class name among Keras's own and given the
arguments its Keras 3 class takes.
"""

from __future__ import annotations

import inspect
from typing import Any

from kstruct.errors import ModelFileError

# Keras 2 loss reductions and their Keras 3 names.
_REDUCTIONS = {"auto": "sum_over_batch_size", "sum_over_batch_size": "sum_over_batch_size", "sum": "sum", "none": None}


def _keras_object(kind: str, value: Any) -> Any:
    """A Keras 3 optimizer/loss/metric from a Keras 2 `{"class_name", "config"}` dict (or a name, kept)."""
    import keras

    if not isinstance(value, dict) or "class_name" not in value:
        return value
    module = {"optimizer": keras.optimizers, "loss": keras.losses, "metric": keras.metrics}[kind]
    name = str(value["class_name"]).split(">")[-1]  # "Custom>Adam" is tf_keras's name for its new Adam
    cls = getattr(module, name, None)
    if not inspect.isclass(cls):
        raise ValueError(f"Keras 3 has no {kind} {name!r}")
    config = dict(value.get("config") or {})
    if isinstance(config.get("fn"), str) and name in ("MeanMetricWrapper", "LossFunctionWrapper"):
        config["fn"] = (keras.metrics.get if kind == "metric" else keras.losses.get)(config["fn"])
    if kind == "loss" and "reduction" in config:
        config["reduction"] = _REDUCTIONS.get(config["reduction"], config["reduction"])
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{key: item for key, item in config.items() if key in accepted})


def _each(kind: str, value: Any) -> Any:
    """`_keras_object` over the nesting Keras allows (per-output lists and dicts)."""
    if isinstance(value, list):
        return [_each(kind, item) for item in value]
    if isinstance(value, dict) and "class_name" not in value:
        return {key: _each(kind, item) for key, item in value.items()}
    return _keras_object(kind, value)


def compile_arguments(config: dict, path: str) -> dict[str, Any] | None:
    """`model.compile(**...)` arguments from an `.h5` `training_config` or a `.keras` `compile_config`.

    Returns None when the file holds no loss (it was saved uncompiled).

    Raises:
        ModelFileError: a setting Keras 3 has no equivalent for, naming the way out.
    """
    optimizer = config.get("optimizer_config", config.get("optimizer"))
    if config.get("loss") is None:
        return None
    try:
        arguments = {
            "optimizer": _keras_object("optimizer", optimizer) if optimizer is not None else "rmsprop",
            "loss": _each("loss", config["loss"]),
        }
        for key in ("metrics", "weighted_metrics"):
            metrics = config.get(key)
            if metrics:  # an .h5 of a one-output model writes [[...]]: one list per output
                arguments[key] = _each("metric", metrics[0] if len(metrics) == 1 and isinstance(metrics[0], list) else metrics)
    except (ValueError, TypeError) as err:
        raise ModelFileError(
            f"{path} holds tf_keras compile settings Keras 3 cannot use ({err}); load it with compile=False and "
            "compile it in Keras 3 (on the command line, save it again from Keras 3)"
        ) from None
    if config.get("loss_weights") is not None:
        arguments["loss_weights"] = config["loss_weights"]
    return arguments
