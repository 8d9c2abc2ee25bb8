"""Cloning a model with only some of its layers rebuilt: the one mechanism behind the float32 twin of a
mixed-precision model and the unrolled copy of a recurrent one."""

from __future__ import annotations

from typing import Any, Callable


def clone_rebuilding(model: Any, new_layer: Callable[[Any], Any], copy_state: Callable[[Any, Any], None]) -> Any:
    """`model` cloned (nested models included) with `new_layer(layer)` in place of each layer it
    rebuilds (None: the layer is shared with `model`, unchanged); each rebuilt layer is then filled by
    `copy_state(original, rebuilt)`. Keras's own errors (ValueError, TypeError) pass through, for the
    caller to say what failed in its own words."""
    import keras

    rebuilt = []

    def clone_function(layer):
        clone = new_layer(layer)
        if clone is None:
            return layer
        rebuilt.append((layer, clone))
        return clone

    copy = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    for layer, clone in rebuilt:
        copy_state(layer, clone)
    return copy
