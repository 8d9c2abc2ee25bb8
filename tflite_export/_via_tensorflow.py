"""Convert a model that lives on the JAX (or PyTorch) backend, in a TensorFlow child process.

The TFLite converter traces the model with `tf.function`, which only a model
built on Keras's TensorFlow backend supports, and Keras picks its backend once
per process. So the model is saved to a temporary `.keras` file and converted by
a fresh interpreter started with `KERAS_BACKEND=tensorflow` (`_isolate`). The
file is the same one a user would write with `model.save`, so what converts here
is what ships: the weights trained on JAX, loaded by TensorFlow.

The child must know the model's custom classes to load the file, so it first
imports the modules that define them: read from the live layers and Keras's
registry in this process, never from the file's config (which anyone can write),
and only modules this process has already imported. The price is one `import tensorflow` per conversion (4 s of CPU,
20 s of wall time on a busy 2-core machine): call `convert` once per model, not
once per measurement.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from tflite_export._isolate import run_isolated
from tflite_export.errors import EdgeTpuCpuFallbackWarning, ExportError


_KERAS_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp"}  # Keras's own loader imports these itself


def _registered_names(config: Any, found: set[str]) -> set[str]:
    """Every `registered_name` string in a serialized config: keys to look up, never modules to import."""
    if isinstance(config, dict):
        registered = config.get("registered_name")
        if isinstance(registered, str) and "class_name" in config:
            found.add(registered)
        for value in config.values():
            _registered_names(value, found)
    elif isinstance(config, (list, tuple)):
        for value in config:
            _registered_names(value, found)
    return found


def modules_to_preload(model: Any) -> list[str]:
    """The modules that define `model`'s custom classes, which the child must import to load it.

    Read from live objects in this process, never from the model's config: the module of
    each layer's class (nested models included), and of each registered object the config
    names, looked up in Keras's registry here. A config is data a file can forge (a
    `{"module": "evilmod", ...}` dict inside a layer argument loads in safe mode); a class
    this process already holds is code the user already runs. Only modules this process
    has imported are returned, so the child never imports anything new.

    Raises:
        ExportError: a custom class is defined in `__main__`, which a child process cannot import.
    """
    import sys

    import keras

    owners: list[Any] = [type(layer) for layer in model._flatten_layers(include_self=True, recursive=True)]
    registry = keras.saving.get_custom_objects()
    config = keras.saving.serialize_keras_object(model)
    owners += [registry[name] for name in sorted(_registered_names(config, set())) if name in registry]
    found: dict[str, str] = {}
    for owner in owners:
        module = getattr(owner, "__module__", None)  # a class, or a registered function
        if not module or module.split(".")[0] in _KERAS_PACKAGES or module == "builtins":
            continue
        found.setdefault(module, keras.saving.get_registered_name(owner))  # "package>Name", as users register it
    if "__main__" in found:
        raise ExportError(
            f"The model uses the custom class {found['__main__']!r}, defined in __main__; converting a model on the "
            f"{keras.backend.backend()!r} backend loads it in a TensorFlow child process, which cannot import your "
            "script. Move the class into an importable module (keep @keras.saving.register_keras_serializable)"
        )
    return sorted(module for module in found if module in sys.modules)


def convert_in_tensorflow_child(
    model: Any,
    target: str,
    samples: list[list[np.ndarray]] | None,
    *,
    convert_saved: Callable[..., tuple[bytes, list[str]]],
    preload: Sequence[str] = (),
    hint: str = "",
    **options: Any,
) -> bytes:
    """`convert(model, target, ...)` for a model built on a non-TensorFlow backend.

    Args:
        model: the `keras.Model` (any backend); it is saved, never changed.
        target: the TFLite target.
        samples: the calibration samples `convert` already drew (one-sample batches, one array
            per input), or None.
        convert_saved: the child's work, `(path, target, samples, options) -> (file, warnings)`: a
            module-level function of `convert.py`, passed in so this module never imports it.
        preload: more modules for the child to import before loading the model.
        hint: appended to the message if the child crashes.
        **options: `convert`'s keyword options (batch_size, io_dtype, ...).
    """
    import keras

    modules = list(dict.fromkeys([*preload, *modules_to_preload(model)]))
    data = None
    if samples is not None:  # back to one array per input, (n, ...): what `convert` takes
        per_input = [np.concatenate(arrays) for arrays in zip(*samples)]
        data = per_input[0] if len(per_input) == 1 else per_input
    with tempfile.TemporaryDirectory(prefix="tflite_export_") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        blob, messages = run_isolated(
            convert_saved, path, target, data, options,
            what=f"The TFLite converter, converting the {keras.backend.backend()} model for target={target!r} "
            "under the TensorFlow backend,",
            hint=hint,
            env={"KERAS_BACKEND": "tensorflow"},
            preload=modules,
            reuse=True,  # one TensorFlow worker for every conversion of this process
        )
    for message in messages:
        warnings.warn(message, EdgeTpuCpuFallbackWarning, stacklevel=3)
    return blob
