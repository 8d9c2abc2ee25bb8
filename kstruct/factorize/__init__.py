"""Low-rank factorization for Keras 3: `decompose` a model's Dense, Conv1D, Conv2D and Embedding
layers into chains of smaller plain layers, then train it with `fit`; `plan` says what it will do."""

from kstruct.errors import FactorizationError
from kstruct.factorize.factors import Factors
from kstruct.factorize.plan import FactorizationPlan, LayerPlan, decompose, factorizable_layers, plan
from kstruct.factorize.step import Factorize

__all__ = [
    "Factorize",
    "FactorizationError",
    "FactorizationPlan",
    "Factors",
    "LayerPlan",
    "decompose",
    "factorizable_layers",
    "plan",
]
