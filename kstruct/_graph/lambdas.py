"""A `Lambda` layer copied from the user's live function, never from its serialized config.

`Lambda.from_config` turns a Python lambda back into code with `marshal`, and Keras's safe
mode refuses it: right for a file from a stranger, wrong for the function the user holds in
memory. Copying from the live objects also keeps the function's globals and closure, which
a config round trip loses (`func_load` runs the code in Keras's module globals).
Files read from disk keep Keras's safe mode: nothing here turns it off.
"""

from __future__ import annotations

import keras

from kstruct._graph.checks import leaf_layers

# The constructor arguments that hold Python code (or, for `arguments`, objects passed to it).
_CODE_KEYS = ("function", "output_shape", "mask", "arguments")


def is_lambda(layer) -> bool:
    """Only Keras's own `Lambda`: a subclass has its own constructor and config."""
    return type(layer) is keras.layers.Lambda


def live_parts(layer: keras.layers.Lambda) -> dict:
    """The live constructor arguments of `layer` that its config would serialize as code.

    `Lambda` exposes `function`, `mask` and `arguments` but keeps its `output_shape` argument
    private; the config holds it in a form that may be a serialized function, hence the attribute.
    """
    return {
        "function": layer.function,
        "output_shape": getattr(layer, "_output_shape", None),
        "mask": layer.mask,
        "arguments": dict(layer.arguments),
    }


def live_lambdas(model: keras.Model) -> dict[str, dict]:
    """Each Lambda layer of `model` (nested models opened up) by name: its `live_parts`."""
    return {layer.name: live_parts(layer) for layer in leaf_layers(model) if is_lambda(layer)}


def lambda_from_parts(config: dict, parts: dict) -> keras.layers.Lambda:
    """A new, unbuilt Lambda: `config` (a layer config: name, dtype, trainable) with the live `parts`."""
    options = {key: value for key, value in config.items() if key not in _CODE_KEYS}
    return keras.layers.Lambda(**parts, **options)


def copy_lambda(layer: keras.layers.Lambda) -> keras.layers.Lambda:
    """A new, unbuilt Lambda running the same live function as `layer`."""
    # The base config (name, dtype, trainable): Lambda's own would serialize the function for nothing.
    return lambda_from_parts(keras.layers.Layer.get_config(layer), live_parts(layer))
