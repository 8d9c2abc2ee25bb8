"""Rebuilding a Sequential or functional model with layers replaced, wrapped, removed or inserted.

`keras.models.clone_model` walks the graph (raw ops such as `x + y` included); this
module adds what every kstruct transformation needs around it: recursion into
nested models, weights carried over only for layers (raw ops hold none) together
with the state `set_weights` misses (adapted preprocessing, see `state.py`), live
Lambda layers copied from their function rather than their config (`lambdas.py`),
removal and insertion of layers, one layer replaced by a chain of several (low-rank
factorization), and the original's compile settings. The original model is never modified.
"""

from __future__ import annotations

from typing import Callable, Iterable

import keras

from kstruct._graph.checks import accepted_keywords, check_graph_model, is_layer
from kstruct._graph.lambdas import copy_lambda, is_lambda
from kstruct._graph.state import carry_state

# `replace` may return a list of layers: a chain called in order in the original's place.
Replace = Callable[[keras.layers.Layer], "keras.layers.Layer | list[keras.layers.Layer]"]
CopyWeights = Callable[[keras.layers.Layer, "keras.layers.Layer | list[keras.layers.Layer]"], None]


def fresh_copy(operation):
    """A new, unbuilt layer (or raw op) of the same class and config.

    A Lambda is made from its live function: its config would hold the function as code,
    which Keras's safe mode rightly refuses to load back.
    """
    if is_lambda(operation):
        return copy_lambda(operation)
    return operation.__class__.from_config(operation.get_config())


def copy_same_weights(original: keras.layers.Layer, new_layer: keras.layers.Layer) -> None:
    """The default weight copy: the new layer has the original's weights, in order."""
    new_layer.set_weights(original.get_weights())


def rebuild(
    model: keras.Model,
    replace: Replace | None = None,
    copy_weights: CopyWeights | None = None,
    *,
    remove: Iterable[str] = (),
    insert_after: dict[str, Callable[[], keras.layers.Layer]] | None = None,
) -> keras.Model:
    """Clones `model`, letting `replace` choose each new layer; nested models are rebuilt the same way.

    Args:
        model: a built Sequential or functional model; not modified.
        replace: `replace(layer)` returns the new layer for an original one
            (default: a fresh copy), or a list of new layers called one after the
            other in its place (the first gets its inputs, the last gives its output).
            Raw ops are always freshly copied.
        copy_weights: `copy_weights(original, new)` fills each new layer (or list
            of them) once the graph is built (default: the original's weights as they
            are); the state weights do not hold (an adapted Normalization's mean)
            follows on its own.
        remove: names of single-input layers to drop: their output becomes their input.
        insert_after: layer name -> a function returning a new layer applied to that
            layer's output (its weights are its own).

    Returns:
        The new model, of the same kind, compiled as `model` was.
    """
    replace = replace or fresh_copy
    copy_weights = copy_weights or copy_same_weights
    remove = set(remove)
    insert_after = dict(insert_after or {})
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []
    originals: dict[int, object] = {}

    def clone(operation):
        if isinstance(operation, keras.Model):
            check_graph_model(operation, "kstruct")
            new = rebuild(operation, replace, copy_weights, remove=remove, insert_after=insert_after)
        elif is_layer(operation):
            new = replace(operation)
            pairs.append((operation, new))
        else:
            new = fresh_copy(operation)
        originals[id(new)] = operation
        return new

    def call(new, *args, **kwargs):
        original = originals[id(new)]
        if original.name in remove:
            return keras.tree.flatten(args)[0]
        if isinstance(new, list):
            return _call_chain(new, args, kwargs)
        outputs = new(*args, **accepted_keywords(new, kwargs))
        if original.name in insert_after:
            outputs = insert_after[original.name]()(outputs)
        return outputs

    if isinstance(model, keras.Sequential):
        new_model = _rebuild_sequential(model, clone, remove, insert_after)
    else:
        new_model = keras.models.clone_model(_uncompiled(model), clone_function=clone, call_function=call)
    for original, new_layer in pairs:
        if original.name not in remove:  # a removed layer was cloned but never called
            copy_weights(original, new_layer)
            carry_state(original, new_layer)
    copy_compile(model, new_model)
    return new_model


def _call_chain(chain: list, args: tuple, kwargs: dict):
    """The layers of a chain called in order: the first on the original call's arguments."""
    outputs = chain[0](*args, **accepted_keywords(chain[0], kwargs))
    for layer in chain[1:]:
        outputs = layer(outputs)
    return outputs


def _uncompiled(model: keras.Model) -> keras.Model:
    """`model`, or when it is compiled and of Keras's own functional class, an uncompiled view of the
    same graph (its layers, inputs and outputs) to clone instead.

    Why: `clone_model` compiles the clone of a compiled model and builds its optimizer's slots
    (a variable or two per weight), which `copy_compile` then replaces with a fresh optimizer.
    A subclass keeps `clone_model`'s own path: the view would lose its class.
    """
    if not model.compiled:
        return model
    view = keras.Model(model.input, model.output, name=model.name)
    return view if type(view) is type(model) else model


def _rebuild_sequential(model: keras.Sequential, clone, remove: set, insert_after: dict) -> keras.Sequential:
    """A new Sequential model of the clones, built here rather than by `clone_model`, which would
    compile it like `model` and build an optimizer `copy_compile` replaces (see `_uncompiled`)."""
    clones = {id(layer): clone(layer) for layer in model.layers if layer.name not in remove}
    layers = []
    for layer in model.layers:
        if layer.name in remove:
            continue
        new = clones[id(layer)]
        layers.extend(new if isinstance(new, list) else [new])
        if layer.name in insert_after:
            layers.append(insert_after[layer.name]())
    source = model.inputs[0]
    inputs = keras.Input(batch_shape=tuple(source.shape), dtype=source.dtype, name=source.name)
    return keras.Sequential([inputs, *layers], name=model.name, trainable=model.trainable)


def copy_compile(
    source: keras.Model, target: keras.Model, *, optimizer: dict | None = None, strict: bool = False
) -> None:
    """Compiles `target` as `source` was compiled, with a fresh optimizer, if it was: the one
    "compile like the user's model" of the package.

    The compile config is loaded back (`optimizer`, serialized, replaces its optimizer). The one
    fallback, for a loss or metric that cannot be loaded back by name: the same loss object and a
    fresh optimizer of the same kind, without the metrics; `strict=True` raises instead.
    `compile(**config)` rather than `compile_from_config`: a subclass that overrides `compile`
    (keras.distillation.Distiller) gets its own, and no optimizer slot is made before `fit`.
    """
    if not source.compiled:
        return
    config = source.get_compile_config()
    if optimizer is not None:
        config = {**config, "optimizer": optimizer}
    try:
        arguments = keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError):
        if strict:
            raise
        fresh = keras.optimizers.deserialize(config["optimizer"]) if optimizer is not None else (
            type(source.optimizer).from_config(source.optimizer.get_config())
        )
        arguments = {"optimizer": fresh, "loss": source.loss}
    target.compile(**arguments)
