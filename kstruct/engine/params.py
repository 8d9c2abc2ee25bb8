"""One parameter count for the report and the search budgets, with `Model.count_params` semantics.

Every weight of the deployed layers counts, trainable or not (a frozen backbone is
still in the file). What kstruct's own wrappers add during training (pruning masks,
step counters, quantizer ranges) is bookkeeping that `strip` removes, so only the
weights of the layer a wrapper holds are counted, and kstruct's stand-alone
quantizer layers count for nothing.
"""

from __future__ import annotations

import keras
import numpy as np


def _is_kstruct(layer: keras.layers.Layer) -> bool:
    return type(layer).__module__.startswith("kstruct.")


def deployed_weights(model: keras.Model) -> list:
    """The model's weights without wrapper bookkeeping, each shared variable once."""
    found: dict[int, object] = {}

    def visit(layer: keras.layers.Layer) -> None:
        if _is_kstruct(layer) and isinstance(layer, keras.layers.Wrapper):
            visit(layer.layer)
        elif _is_kstruct(layer):
            return  # kstruct's own layers (input quantizers) hold only ranges, gone from the deployed file
        elif isinstance(layer, keras.Model):
            for sub in layer.layers:
                visit(sub)
        else:
            for weight in layer.weights:
                found.setdefault(id(weight), weight)

    visit(model)
    return list(found.values())


def count_params(model: keras.Model) -> int:
    """Parameters of the deployed network; equals `model.count_params()` for a model without wrappers."""
    return int(sum(int(np.prod(w.shape)) for w in deployed_weights(model)))


def count_nonzero_params(model: keras.Model) -> int:
    """Deployed parameters that are not zero (what pruning removes from a compressed file)."""
    return int(sum(np.count_nonzero(keras.ops.convert_to_numpy(w)) for w in deployed_weights(model)))
