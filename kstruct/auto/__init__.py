"""`auto`: the budget, not the recipe. Searches chains of the registered steps and their training
settings on Keras Tuner, and hands on the best trial that meets the budget.

The step is `kstruct.auto.step.Auto` (imported on first use: it loads Keras Tuner).
"""

from kstruct.auto.budget import Budget, Cost

__all__ = ["Budget", "Cost"]
