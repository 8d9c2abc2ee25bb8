"""A copy of a tf_keras `.h5` model file that Keras 3's own `.h5` reader loads as the model tf_keras saved.

The copy gets the rewritten config (`_legacy_config.rewrite`), no training config (the
caller compiles from a translated one), and, for tfmot's wrappers, only the wrapped layer's
weights: a pruning mask is multiplied into its kernel first, as tfmot's own predict does,
then the masks, pruning steps and fake-quant ranges are left out of the layer's weight list.
Keras's reader matches weights to layers by order, so every layer keeps its values.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np

from kstruct.errors import ModelFileError
from kstruct.loading._legacy_config import Rewrites, rewrite


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_configs(path: str) -> tuple[dict, dict | None]:
    """(model config, training config or None) of an `.h5` model file, parsed as JSON."""
    import h5py

    with h5py.File(path, "r") as f:
        model_config = f.attrs.get("model_config")
        training_config = f.attrs.get("training_config")
    if model_config is None:
        raise ModelFileError(
            f"{path} holds weights only (no model config), as model.save_weights writes them; build the model in "
            "Keras 3 and call model.load_weights(path)"
        )
    try:
        return json.loads(_text(model_config)), (json.loads(_text(training_config)) if training_config else None)
    except ValueError as err:
        raise ModelFileError(f"{path} has a model config that is not JSON: {err}") from None


def _components(weight_name: str) -> list[str]:
    return weight_name.split(":")[0].split("/")


def _strip_wrapper_weights(group, rewrites: Rewrites) -> None:
    """One layer group of `model_weights`: masks applied, the wrappers' own variables left out of `weight_names`."""
    names = [_text(n) for n in group.attrs.get("weight_names", [])]
    wrappers = rewrites.wrapper_names
    own = [n for n in names if wrappers.isdisjoint(_components(n))]
    if len(own) == len(names):
        return
    for wrapper, inner in rewrites.pruned.items():
        masks = [n for n in names if wrapper in _components(n) and _components(n)[-1].startswith("mask")]
        targets = [n for n in own if inner in _components(n)]
        for mask in masks:  # the i-th mask belongs to the i-th prunable weight of its shape
            shape = group[mask].shape
            match = next((t for t in targets if group[t].shape == shape), None)
            if match is None:
                raise ModelFileError(f"tfmot mask {mask!r} matches no weight of layer {inner!r}")
            targets.remove(match)
            group[match][...] = np.asarray(group[match]) * np.asarray(group[mask])
    group.attrs["weight_names"] = np.array([n.encode("utf-8") for n in own], dtype="S")


def fixed_copy(path: str, target: str) -> tuple[Rewrites, dict | None]:
    """Writes the fixed copy of `path` to `target`; returns what was rewritten and the training config."""
    import h5py

    model_config, training_config = read_configs(path)
    config, rewrites = rewrite(model_config)
    shutil.copyfile(path, target)
    with h5py.File(target, "r+") as f:
        f.attrs["model_config"] = json.dumps(config)
        if "training_config" in f.attrs:
            del f.attrs["training_config"]
        if rewrites.wrapper_names and "model_weights" in f:
            weights = f["model_weights"]
            for name in weights.attrs.get("layer_names", []):
                _strip_wrapper_weights(weights[_text(name)], rewrites)
    return rewrites, training_config
