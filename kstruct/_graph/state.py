"""A rebuilt layer's state beyond its weights, carried over as a `.keras` save and load would.

`set_weights` assigns variables and nothing else. Some layers keep state outside them or
derive it from them: an adapted `Normalization` computes its `mean` and `variance` tensors
from its variables when it is loaded (`finalize_state`), a `StringLookup`/`IntegerLookup`/
`TextVectorization` keeps its adapted vocabulary in a lookup table saved as an asset, and its
TF-IDF weights outside Keras variables. A copy made with `set_weights` alone silently runs
without them (an adapted Normalization that normalizes nothing). Keras's own save and load
path (`save_own_variables`/`load_own_variables`, `save_assets`/`load_assets`) is the one
mechanism every layer, a user's custom one included, already implements for this, so the
rebuild goes through it.
"""

from __future__ import annotations

import tempfile

import keras

_BASE = keras.layers.Layer


def _overrides(cls: type, method: str) -> bool:
    """Whether `cls` defines `method` itself (Keras's base Layer may not define it at all)."""
    return getattr(cls, method, None) is not getattr(_BASE, method, None)


def _counterpart(original: keras.layers.Layer, new: keras.layers.Layer):
    """`new`, or the layer it wraps, when it is of the original's class; else None (nothing to carry)."""
    for candidate in (new, getattr(new, "layer", None)):
        if candidate is not None and type(candidate) is type(original):
            return candidate
    return None


def carry_state(original: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Gives `new` (built, its weights already set) the rest of `original`'s state.

    Only layers with adapted state (Keras's preprocessing protocol: `adapt`, `finalize_state`)
    keep state `set_weights` misses; the others are left alone, since running a weighted
    layer's own load path (Dense merges a LoRA update into its kernel when saving) could
    change values the caller set on purpose. Assets (vocabularies) and state saved outside
    variables (TF-IDF weights) come from `original`; a layer whose saved state is its
    variables reloads them from itself, which runs its post-load step (Normalization's
    mean and variance) over the values the caller gave it.
    """
    target = _counterpart(original, new)
    if target is None or not hasattr(target, "finalize_state") or not (original.built and target.built):
        return
    cls = type(target)
    if _overrides(cls, "save_assets"):
        with tempfile.TemporaryDirectory(prefix="kstruct_assets_") as folder:
            original.save_assets(folder)
            target.load_assets(folder)
    store: dict = {}
    (original if _overrides(cls, "save_own_variables") else target).save_own_variables(store)
    target.load_own_variables(store)
