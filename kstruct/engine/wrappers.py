"""Undoing a technique's training wrappers without knowing the technique.

A kstruct wrapper whose inner layer trains a transformed copy of its weights (PruneWrapper: a
mask) declares `stripped_weights()`: the inner layer's weights as the deployed layer holds them.
`strip_declared` swaps every such wrapper for a fresh copy of its inner layer holding those
weights. So `qat` can take a model still wrapped by `prune` without importing pruning
(techniques never import each other), and `pruning.strip` is this plus its own checks.
"""

from __future__ import annotations

import keras

from kstruct._graph import fresh_copy, leaf_layers, rebuild


def declares_stripped_weights(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Wrapper) and callable(getattr(layer, "stripped_weights", None))


def declaring_wrappers(model: keras.Model) -> list[keras.layers.Wrapper]:
    """The wrappers in `model` (nested models included) that declare `stripped_weights()`."""
    return [layer for layer in leaf_layers(model) if declares_stripped_weights(layer)]


def strip_declared(model: keras.Model) -> keras.Model:
    """A copy of `model` with each declaring wrapper replaced by its inner layer's class and stripped weights."""

    def replace(layer):
        return fresh_copy(layer.layer if declares_stripped_weights(layer) else layer)

    def copy_weights(original, new_layer):
        stripped = declares_stripped_weights(original)
        new_layer.set_weights(original.stripped_weights() if stripped else original.get_weights())

    return rebuild(model, replace, copy_weights)
