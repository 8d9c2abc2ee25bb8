"""Structure search under a deployment budget, on Keras Tuner.

`space(model)` derives a `keras_tuner.HyperModel` (widths, droppable blocks,
activations the target runs natively); `run(space, ...)` searches it with Keras
Tuner's own oracles, measuring each trial's TFLite file on LiteRT against a budget;
`Search` is the strategy step that does both.
"""

from kstruct.search.activations import NATIVE_ACTIVATIONS, native_activations
from kstruct.search.budget import BUDGET_KEYS, Budget, BudgetError, Measurement, SearchError
from kstruct.search.pareto import plot_pareto
from kstruct.search.result import SearchResult, TrialRecord, pareto_front
from kstruct.search.run import run
from kstruct.search.space import SearchSpace, space
from kstruct.search.step import Search
from kstruct.search.callbacks import BehindBestStopping
from kstruct.search.tuner import BudgetedBayesianOptimization, BudgetedHyperband, BudgetedRandomSearch, TUNER_NAMES

__all__ = [
    "space",
    "SearchSpace",
    "run",
    "SearchResult",
    "TrialRecord",
    "Budget",
    "BUDGET_KEYS",
    "Measurement",
    "SearchError",
    "BudgetError",
    "pareto_front",
    "plot_pareto",
    "Search",
    "NATIVE_ACTIVATIONS",
    "native_activations",
    "BehindBestStopping",
    "BudgetedRandomSearch",
    "BudgetedBayesianOptimization",
    "BudgetedHyperband",
    "TUNER_NAMES",
]
