"""Recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional) made convertible.

Keras 3 runs a recurrent layer as a `tf.while_loop`, which the converter keeps as
a TFLite WHILE op. Two things break on it: the converter's int8 calibration
(its calibrating interpreter dies with SIGSEGV on the WHILE subgraphs of TF 2.21)
and the GPU delegate (no WHILE kernel). Keras 3 no longer tags its LSTM with
the `api_implements` attribute the converter fuses into
UNIDIRECTIONAL_SEQUENCE_LSTM, so the fused op is out of reach without writing
our own LSTM. Unrolling the loop over the (static) time axis gives plain
FULLY_CONNECTED / LOGISTIC / TANH / MUL / ADD ops that every target quantizes
and runs. The user's model is never touched: recurrent layers are rebuilt with
`unroll=True` and given their weights, every other layer is shared as is.
"""

from __future__ import annotations

from typing import Any

from tflite_export.errors import ExportError


def _rolled(layer) -> bool:
    import keras

    if isinstance(layer, keras.layers.Bidirectional):
        return not layer.forward_layer.unroll or not layer.backward_layer.unroll
    return isinstance(layer, keras.layers.RNN) and not layer.unroll


def _walk(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers") and not hasattr(layer, "forward_layer"):
            yield from _walk(layer)


def rolled_recurrent_layers(model) -> list[str]:
    """Names of the recurrent layers that would run as a WHILE loop, nested models included."""
    return [layer.name for layer in _walk(model) if _rolled(layer)]


def _unrolled_config(layer) -> dict[str, Any]:
    config = layer.get_config()
    if "layer" in config:  # Bidirectional: both directions
        for key in ("layer", "backward_layer"):
            if config.get(key):
                config[key]["config"]["unroll"] = True
    else:
        config["unroll"] = True
    return config


def unroll_recurrent(model):
    """Returns `model` itself when it has no rolled recurrent layer, else a copy with `unroll=True`.

    Raises:
        ExportError: a recurrent layer sees an unknown number of time steps
            (it cannot be unrolled), or the model cannot be cloned.
    """
    names = rolled_recurrent_layers(model)
    if not names:
        return model
    import keras

    def clone_function(layer):
        if not _rolled(layer):
            return layer
        clone = type(layer).from_config(_unrolled_config(layer))
        clone.build(layer.input.shape)
        clone.set_weights(layer.get_weights())
        return clone

    try:
        return keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    except Exception as error:  # Keras raises ValueError or TypeError here
        raise ExportError(
            f"The recurrent layers {names} run as a TFLite WHILE loop, which int8 calibration and the GPU "
            f"delegate cannot handle, and unrolling them failed: {error}. Give keras.Input a fixed sequence "
            "length, or convert for target='float32', 'dynamic' or 'float16', which keep the loop"
        ) from error
