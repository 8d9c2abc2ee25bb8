"""Mixed-precision models made convertible: a float32 twin.

A layer under `mixed_float16` (or `float16`) computes in float16, so the traced
graph holds float16 Conv2D/MatMul/BiasAdd/Relu ops; the TFLite converter has no
builtin kernel for them and asks for Flex, for every target. Mixed precision is
a training device: its variables are already float32, and TFLite's own `float16`
target stores float16 weights and computes as the runtime chooses. So the model
is converted as its float32 twin: each layer whose policy computes in half
precision (`mixed_bfloat16` and `bfloat16` too) is rebuilt from its config with
`dtype="float32"` and given the original's state (weights cast to float32).

The user's model and the process's global dtype policy are never touched: the
policy is replaced in each rebuilt layer's config, not set globally. Layers
already computing in float32 are shared with the user's model as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tflite_export._clone import clone_rebuilding
from tflite_export.errors import ExportError

_HALF = ("float16", "bfloat16")


def _is_half_policy(value: Any) -> bool:
    """Whether a config's `dtype` entry names a policy that computes in float16 or bfloat16."""
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        value = (value.get("config") or {}).get("name")
    return isinstance(value, str) and value.removeprefix("mixed_") in _HALF


def _float32_config(config: Any) -> bool:
    """Replaces every half-precision `dtype` policy in a (nested) layer config by "float32"; True if any."""
    changed = False
    if isinstance(config, dict):
        if _is_half_policy(config.get("dtype")):
            config["dtype"] = "float32"
            changed = True
        for key, value in config.items():
            if key != "dtype":
                changed = _float32_config(value) or changed
    elif isinstance(config, (list, tuple)):
        for value in config:
            changed = _float32_config(value) or changed
    return changed


def _walk(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer


def _half_config(layer) -> dict[str, Any] | None:
    """The layer's config with float32 compute, or None when nothing in it computes in half precision."""
    import keras

    if isinstance(layer, (keras.Model, keras.layers.InputLayer)):
        return None  # a model is cloned layer by layer; an input's dtype is the data's, not a compute policy
    if type(layer) is keras.layers.Lambda:  # its own config would carry the function as code (see _float32_copy)
        config = keras.layers.Layer.get_config(layer)
    else:
        try:
            config = layer.get_config()
        except NotImplementedError:
            config = None
    if config is not None and _float32_config(config):
        return config
    if layer.dtype_policy.compute_dtype in _HALF:
        raise ExportError(
            f"Layer {layer.name!r} ({type(layer).__name__}) computes in {layer.dtype_policy.name!r}, which TFLite's "
            "builtin kernels lack, and its config does not carry that policy, so it cannot be rebuilt in float32. "
            "Give the layer a get_config() that includes the base config (**super().get_config()), or build the "
            "model under keras.mixed_precision.set_global_policy('float32')"
        )
    return None


def _float32_copy(layer, config: dict[str, Any]):
    """A new, unbuilt layer from `config`. A Lambda is made from its live function: rebuilding
    it from its config would turn the function back into code, which Keras's safe mode refuses
    (rightly, for a file; this is the user's own function in memory)."""
    import keras

    if type(layer) is keras.layers.Lambda:
        # Lambda keeps its `output_shape` argument private; the config would hold it serialized.
        parts = {"output_shape": getattr(layer, "_output_shape", None), "mask": layer.mask, "arguments": dict(layer.arguments)}
        return keras.layers.Lambda(layer.function, **parts, **config)
    return type(layer).from_config(config)


def half_precision_layers(model) -> list[str]:
    """Names of the layers that compute in float16 or bfloat16 (nested models included)."""
    return [layer.name for layer in _walk(model) if _half_config(layer) is not None]


def _to_float32(value: Any) -> Any:
    import keras

    array = keras.ops.convert_to_numpy(value)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def _copy_state(source, clone) -> None:
    """Copies every variable of `source` into `clone`, then lets the clone finish its own state.

    The weights first (nested layers included, float values cast to float32), then, for an
    adapted preprocessing layer, its own variables through `load_own_variables`, the path
    Keras's loader takes, so that the tensors it derives from them (a Normalization's mean
    and variance) are derived again.
    """
    clone.set_weights([_to_float32(w) for w in source.get_weights()])
    if not hasattr(clone, "finalize_state"):
        # Only adapted layers derive state from their variables; another layer's own save path can
        # change values on the way (Dense merges a LoRA update into its kernel).
        return
    store: dict[str, Any] = {}
    source.save_own_variables(store)
    if store:
        clone.load_own_variables({key: _to_float32(value) for key, value in store.items()})


def float32_twin(model):
    """Returns `model` itself when no layer computes in half precision, else a float32 copy.

    Only layers whose dtype policy computes in float16 or bfloat16 (`mixed_float16`,
    `mixed_bfloat16`, `float16`, `bfloat16`) are rebuilt, from their config with
    `dtype="float32"`; the others are shared with `model`. Weights keep their values
    (float32 already under a mixed policy; cast from a pure float16 policy).

    Raises:
        ExportError: a half-precision layer cannot be rebuilt (no config, or the
            model cannot be cloned).
    """
    names = half_precision_layers(model)
    if not names:
        return model

    def float32_layer(layer):
        config = _half_config(layer)
        return None if config is None else _float32_copy(layer, config)

    try:
        twin = clone_rebuilding(model, float32_layer, _copy_state)
    except ExportError:
        raise
    except Exception as error:  # Keras raises ValueError or TypeError here
        raise ExportError(
            f"The model computes in half precision (layers {names[:5]}{', ...' if len(names) > 5 else ''}), which "
            f"TFLite's builtin kernels lack, and rebuilding it with float32 compute failed: {error}. Build the model "
            "under keras.mixed_precision.set_global_policy('float32') and load the weights into it"
        ) from error
    return twin
