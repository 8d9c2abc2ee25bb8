"""Rebuilding Sequential and functional models layer by layer, with weights carried over.

`keras.models.clone_model` rebuilds the graph; this module adds what every kstruct
transformation needs around it: a clear error for subclassed models, recursion into
nested models, and copying the original weights into the new layers.
"""

from __future__ import annotations

from typing import Callable

import keras

from kstruct.errors import UnsupportedModelError


def is_graph_model(model) -> bool:
    """True for Sequential and functional models: the ones whose layers kstruct can rewrite."""
    if isinstance(model, keras.Sequential):
        return True
    return isinstance(model, keras.Model) and any(c.__name__ == "Functional" for c in type(model).__mro__)


def check_graph_model(model, what: str) -> None:
    """Raises UnsupportedModelError with a recipe unless `model` is Sequential or functional."""
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"Expected a Keras model for {what}. Received: an object of type {type(model).__name__}"
        )
    if not is_graph_model(model):
        raise UnsupportedModelError(
            f"{what} supports Sequential and functional Keras models (nested ones included). "
            f"Received: a subclassed model of type {type(model).__name__}. Rebuild it with the functional "
            "API (keras.Model(inputs, outputs)), or apply kstruct to the Sequential/functional "
            "sub-models it is made of."
        )
    if not model.built or not model.inputs:
        raise UnsupportedModelError(
            f"{what} needs a built model with known inputs. Received: model `{model.name}` with no inputs; "
            "start it with keras.Input(shape) or call it once on data."
        )


def fresh_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new, unbuilt layer of the same class and config."""
    return layer.__class__.from_config(layer.get_config())


def rebuild(
    model: keras.Model,
    replace: Callable[[keras.layers.Layer], keras.layers.Layer],
    copy_weights: Callable[[keras.layers.Layer, keras.layers.Layer], None],
) -> keras.Model:
    """Clones `model`, letting `replace` choose each new layer; nested models are rebuilt the same way.

    `replace(layer)` returns the new layer for an original one; once the new graph
    is built, `copy_weights(original, new)` fills each new layer from its original.
    The original model is not modified.
    """
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_layer(layer):
        if isinstance(layer, keras.Model):
            check_graph_model(layer, "kstruct")
            return rebuild(layer, replace, copy_weights)
        new_layer = replace(layer)
        pairs.append((layer, new_layer))
        return new_layer

    new_model = keras.models.clone_model(model, clone_function=clone_layer)
    for original, new_layer in pairs:
        copy_weights(original, new_layer)
    copy_compile(model, new_model)
    return new_model


def copy_compile(source: keras.Model, target: keras.Model) -> None:
    """Compiles `target` as `source` was compiled (with a fresh optimizer), if it was."""
    if not source.compiled:
        return
    try:
        target.compile_from_config(source.get_compile_config())
    except Exception:  # a loss or metric that cannot be serialized: reuse the objects
        optimizer = type(source.optimizer).from_config(source.optimizer.get_config())
        target.compile(optimizer=optimizer, loss=source.loss)
