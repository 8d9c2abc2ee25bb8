"""Which models kstruct can read as a graph, the one error for those it cannot, and what a layer's call accepts."""

from __future__ import annotations

import inspect

import keras

from kstruct.errors import UnsupportedModelError


def is_graph_model(model) -> bool:
    """True for Sequential and functional models: the ones whose layers kstruct can rewrite."""
    if isinstance(model, keras.Sequential):
        return True
    return isinstance(model, keras.Model) and any(c.__name__ == "Functional" for c in type(model).__mro__)


def is_layer(operation) -> bool:
    """False for raw ops (`x + y`, `keras.ops.*` on symbolic tensors): they hold no weights or config to copy."""
    return isinstance(operation, keras.layers.Layer)


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


def leaf_layers(model):
    """Every layer of `model`, nested models opened up (their layers instead of them), in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def accepted_keywords(layer, kwargs: dict) -> dict:
    """`kwargs` less a `mask=None` the layer's call does not take.

    Keras records `mask=None` on the node of a layer whose call takes a mask (a recurrent layer, or
    a wrapper around one); the layer that replaces it (the stripped inner layer) may not take one.
    """
    if kwargs.get("mask", 0) is None and callable(getattr(layer, "call", None)):
        if "mask" not in inspect.signature(layer.call).parameters:
            return {key: value for key, value in kwargs.items() if key != "mask"}
    return kwargs
