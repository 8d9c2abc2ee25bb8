"""kstruct: shrink Keras 3 models and ship them as TFLite.

    result = kstruct.optimize(model, "prune(0.75)", train_data=(x, y), target="int8")
    result.report, result.model, result.tflite

Names are imported on first use, so `import kstruct` does not load TensorFlow;
kstruct's Keras objects register when Keras is imported (see `_keras_objects`).
"""

import importlib

from kstruct import _keras_objects

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "optimize": "kstruct.pipeline",
    "OptimizationResult": "kstruct.pipeline",
    "Strategy": "kstruct.strategy",
    "KNOWN_STEPS": "kstruct.strategy",
    "register_step": "kstruct.strategy",
    "Step": "kstruct.engine.step",
    "StepResult": "kstruct.engine.step",
    "TrainingStep": "kstruct.engine.step",
    "Prune": "kstruct.pruning.step",
    "PruneChannels": "kstruct.pruning.channels_step",
    "DropBlocks": "kstruct.pruning.blocks_step",
    "Factorize": "kstruct.factorize.step",
    "QAT": "kstruct.quantization.step",
    "PTQ": "kstruct.quantization.step",
    "Search": "kstruct.search.step",
    "Cluster": "kstruct.clustering.step",
    "Distill": "kstruct.distillation.step",
    "Auto": "kstruct.auto.step",
    "Budget": "kstruct.auto.budget",
    "Report": "kstruct.report",
    "StageReport": "kstruct.report",
    "OutputExistsError": "kstruct.outputs",
    "KstructError": "kstruct.errors",
    "DataError": "kstruct.errors",
    "PruningError": "kstruct.errors",
    "DistillationError": "kstruct.errors",
    "StrategyError": "kstruct.errors",
    "UnsupportedModelError": "kstruct.errors",
    "ModelFileError": "kstruct.errors",
    "load_model": "kstruct.loading",
}
_SUBPACKAGES = ("pruning", "quantization", "clustering", "search", "distillation", "factorize", "plots", "data", "models", "outputs", "errors")

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES])

_keras_objects.install()


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"kstruct.{name}")
    raise AttributeError(f"module 'kstruct' has no attribute {name!r}")


def __dir__():
    return __all__
