"""Registers kstruct's Keras objects as soon as Keras is imported, so `load_model` finds them.

`keras.models.load_model` finds a custom class only once the module defining it
has run `register_keras_serializable`; it imports modules of its own packages
only (keras, keras_hub), never kstruct's. `import kstruct` does not import Keras
(that would load TensorFlow), so kstruct registers right after Keras itself is
imported: at once if it already is, else from a one-shot import hook that runs
when Keras's own module has finished executing.

A module that defines a registered Keras object adds itself to `MODULES`
(tests/quantization/test_qat_saving.py fails when one is missing).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MODULES = (
    "kstruct.pruning.schedules",
    "kstruct.pruning.wrapper",
    "kstruct.pruning.channels_wrapper",
    "kstruct.quantization.quantizers",
    "kstruct.quantization.layers",
    "kstruct.quantization.int4_export",
    "kstruct.clustering.wrapper",
)


def register() -> None:
    """Imports every module in `MODULES`; their decorators register the classes with Keras."""
    try:
        for module in MODULES:
            importlib.import_module(module)
    except Exception as error:  # never break the user's `import keras`
        warnings.warn(
            f"kstruct could not register its Keras objects ({error!r}); import {', '.join(MODULES)} "
            "before keras.models.load_model reads a kstruct model.",
            stacklevel=2,
        )


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds Keras as the other finders do, and registers kstruct once Keras's module has run."""

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        # Returning a spec ends the import system's walk of sys.meta_path, so removing this finder now is safe.
        sys.meta_path.remove(self)
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    """Registers now if Keras is loaded, else once it is."""
    if "keras" in sys.modules:
        register()
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
