"""Recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional) made convertible.

Keras 3 runs a recurrent layer as a `tf.while_loop`, which the converter keeps as
a TFLite WHILE op. Two things break on it: the converter's int8 calibration
(its calibrating interpreter dies with SIGSEGV on the WHILE subgraphs of TF 2.21)
and the GPU delegate (no WHILE kernel). TF 2.21's converter does not fuse
Keras 3's LSTM into UNIDIRECTIONAL_SEQUENCE_LSTM (the float32 file keeps the
WHILE loop), so the fused op is out of reach without an LSTM of our own.
Unrolling the loop over the (static) time axis gives plain FULLY_CONNECTED /
LOGISTIC / TANH / MUL / ADD ops, which int8, int16x8, edgetpu and micro quantize
and run (the GPU delegate still lacks the UNPACK that splits the time steps).
The user's model is never touched: the layers holding a loop are rebuilt with
`unroll=True` and given their weights; every other layer is shared as is.
"""

from __future__ import annotations

from typing import Any

from tflite_export._clone import clone_rebuilding
from tflite_export.errors import ExportError


def _unroll_config(config: Any) -> bool:
    """Sets every nested `"unroll": False` to True (RNNs, Bidirectional, wrappers around them); True if any."""
    changed = False
    if isinstance(config, dict):
        if config.get("unroll") is False:
            config["unroll"] = changed = True
        for value in config.values():
            changed = _unroll_config(value) or changed
    elif isinstance(config, (list, tuple)):
        for value in config:
            changed = _unroll_config(value) or changed
    return changed


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _unrolled_config(layer) -> dict[str, Any] | None:
    """The layer's config with its loops unrolled, or None when it has no rolled loop."""
    if _is_model(layer):
        return None
    try:
        config = layer.get_config()
    except NotImplementedError:  # a custom layer without get_config cannot hold a Keras RNN we could rebuild
        return None
    return config if _unroll_config(config) else None


def _walk(model):
    for layer in model.layers:
        if _is_model(layer):
            yield from _walk(layer)
        else:
            yield layer


def rolled_recurrent_layers(model) -> list[str]:
    """Names of the layers that would run a recurrent layer as a WHILE loop, nested models included."""
    return [layer.name for layer in _walk(model) if _unrolled_config(layer) is not None]


def unroll_recurrent(model):
    """Returns `model` itself when it has no rolled recurrent layer, else a copy with `unroll=True`.

    Only the layers holding a loop (an RNN, or a wrapper such as Bidirectional
    around one) are rebuilt from their config and given the original weights.

    Raises:
        ExportError: a recurrent layer sees an unknown number of time steps
            (it cannot be unrolled), or the model cannot be cloned.
    """
    names = rolled_recurrent_layers(model)
    if not names:
        return model

    def unrolled_layer(layer):
        config = _unrolled_config(layer)
        return None if config is None else type(layer).from_config(config)

    try:
        unrolled = clone_rebuilding(model, unrolled_layer, lambda layer, clone: clone.set_weights(layer.get_weights()))
    except Exception as error:  # Keras raises ValueError or TypeError here
        raise ExportError(
            f"The recurrent layers {names} run as a TFLite WHILE loop, which int8 calibration and the GPU "
            f"delegate cannot handle, and unrolling them failed: {error}. Give keras.Input a fixed sequence "
            "length, or convert for target='float32', 'dynamic' or 'float16', which keep the loop"
        ) from error
    return unrolled
