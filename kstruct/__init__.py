"""kstruct: shrink Keras 3 models and ship them as TFLite.

    result = kstruct.optimize(model, "prune(0.75)", train_data=(x, y), target="int8")
    result.report, result.model, result.tflite
"""

from kstruct import pruning
from kstruct.errors import DataError, KstructError, PruningError, StrategyError, UnsupportedModelError
from kstruct.optimize import OptimizationResult, optimize
from kstruct.outputs import OutputExistsError
from kstruct.pruning.step import Prune
from kstruct.report import Report, StageReport
from kstruct.step import Step, StepResult
from kstruct.strategy import KNOWN_STEPS, Strategy

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "KNOWN_STEPS",
    "KstructError",
    "OptimizationResult",
    "OutputExistsError",
    "Prune",
    "PruningError",
    "Report",
    "StageReport",
    "Step",
    "StepResult",
    "Strategy",
    "StrategyError",
    "UnsupportedModelError",
    "optimize",
    "pruning",
]
