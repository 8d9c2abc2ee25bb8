"""The one way a technique's `layers=` argument picks layers.

`layers` is a layer name, a regular expression matched against whole names, a list of those,
or a predicate `layer -> bool`. Every name or pattern must select at least one candidate (a
typo is an error naming the candidates, never a silent no-op), and so must a predicate.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence, Union

import keras

LayerSelector = Union[None, str, Iterable[str], Callable[[keras.layers.Layer], bool]]


def layer_predicate(layers: LayerSelector) -> Callable[[keras.layers.Layer], bool]:
    """`layers` as one predicate, for a caller that reports an empty selection in its own terms."""
    if layers is None:
        return lambda layer: True
    if callable(layers):
        return layers
    patterns = [layers] if isinstance(layers, str) else list(layers)
    compiled = [re.compile(pattern) for pattern in patterns]
    return lambda layer: any(layer.name == p or c.fullmatch(layer.name) for p, c in zip(patterns, compiled))


def select_layers(
    candidates: Sequence[keras.layers.Layer],
    layers: LayerSelector,
    *,
    kind: str,
    default: Callable[[keras.layers.Layer], bool] = lambda layer: True,
) -> list[keras.layers.Layer]:
    """The candidates `layers` selects, in their order (`default` decides when `layers` is None).

    Args:
        candidates: the layers the technique can work on.
        layers: the user's selection.
        kind: what the candidates are, for the message ("prunable", "clusterable").
        default: which candidates `layers=None` selects.

    Raises:
        ValueError: a name or pattern matching no candidate, or a predicate selecting none.
    """
    names = ", ".join(layer.name for layer in candidates) or "none"
    if layers is None:
        return [layer for layer in candidates if default(layer)]
    if callable(layers):
        chosen = [layer for layer in candidates if layers(layer)]
        if not chosen:
            raise ValueError(f"`layers` selected no {kind} layer. {kind.capitalize()} layers: {names}")
        return chosen
    patterns = [layers] if isinstance(layers, str) else list(layers)
    chosen_ids: set[int] = set()
    for pattern in patterns:
        compiled = re.compile(pattern)
        matched = [layer for layer in candidates if layer.name == pattern or compiled.fullmatch(layer.name)]
        if not matched:
            raise ValueError(f"`layers` entry {pattern!r} matches no {kind} layer. {kind.capitalize()} layers: {names}")
        chosen_ids.update(id(layer) for layer in matched)
    return [layer for layer in candidates if id(layer) in chosen_ids]
