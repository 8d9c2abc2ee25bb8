"""The `search` strategy step: derive a space from the model, search it under a budget."""

from __future__ import annotations

import os
import time

import keras

from kstruct.search.budget import Budget
from kstruct.search.pareto import plot_pareto
from kstruct.search.run import run
from kstruct.search.space import DEFAULT_WIDTHS, space
from kstruct.search.tuner import TUNER_NAMES
from kstruct.engine.arguments import optional_positive_int_argument
from kstruct.engine.step import Step, StepResult
from kstruct.engine.training import StepContext
from kstruct.engine.workdir import working_directory


class Search(Step):
    """Structure search (widths, depth, activations) under a deployment budget.

    In a strategy: `search(trials=12, latency_ms=0.5)`, with any of `tflite_bytes=`,
    `params=`, `tuner='random'`, `epochs=`. The model handed on is the best trial
    within budget, trained for `epochs` from the original's weights (sliced).

    Args:
        trials: how many structures to try.
        latency_ms / tflite_bytes / params: the budget (at least none: then the
            search is for accuracy alone).
        tuner: "random" (default), "bayesian" or "hyperband".
        epochs: training epochs per trial (default: the strategy's epochs).
        training: also search each trial's optimizer, learning rate and batch size.
        directory: where the trials go (a search there resumes); default a temporary
            folder, removed with the trials' files when the step ends.
        plot: also write `pareto.png` beside the trials in `directory` (`Result.save`
            writes it into its folder either way).
    """

    name = "search"
    trains = True
    always_shown = ("trials",)

    def __init__(
        self,
        trials: int = 12,
        *,
        latency_ms: float | None = None,
        tflite_bytes: int | None = None,
        params: int | None = None,
        tuner: str = "random",
        epochs: int | None = None,
        directory: str | None = None,
        plot: bool = True,
        training: bool = False,
    ):
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"Expected `trials` to be a positive int. Received: trials={trials!r}")
        if tuner not in TUNER_NAMES:
            raise ValueError(f"Expected `tuner` to be one of {TUNER_NAMES}. Received: tuner={tuner!r}")
        self.budget = Budget.from_mapping(
            {k: v for k, v in (("latency_ms", latency_ms), ("tflite_bytes", tflite_bytes), ("params", params)) if v is not None}
        )
        self.trials = trials
        self.tuner = tuner
        self.epochs = optional_positive_int_argument("epochs", epochs)
        self.directory = directory
        self.plot = plot
        self.training = bool(training)

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        start = time.perf_counter()
        hypermodel = space(
            model, widths=DEFAULT_WIDTHS, target=context.target, compile=context.compile, training=self.training
        )
        with working_directory(self.directory, "kstruct-search-") as directory:
            result = run(
                hypermodel,
                context.train,
                context.validation,
                budget=self.budget,
                target=context.target,
                tuner=self.tuner,
                max_trials=self.trials,
                epochs=self.epochs or context.epochs,
                directory=directory,
                verbose=0,
            )
        plot_path = None
        if self.plot and self.directory is not None:
            plot_path = plot_pareto(result, os.path.join(self.directory, "pareto.png"))
        notes = {
            "objective": result.objective,
            "target": result.target,
            "budget": self.budget.limits(),
            "best_trial": result.best_trial.as_dict(),
            "trials": [t.as_dict() for t in result.trials],
            "pareto": result.to_dict()["pareto"],
            "overhead": result.overhead,
            "peak_rss_mb": result.peak_rss_mb,
            "search_seconds": time.perf_counter() - start,
            "directory": self.directory,  # None: the temporary folder is gone
            "plot": plot_path,
        }
        return StepResult(model=context.compile(result.best_model), notes=notes)

    def get_config(self) -> dict:
        limits = self.budget.limits()
        return {
            "trials": self.trials,
            "latency_ms": limits.get("latency_ms"),
            "tflite_bytes": limits.get("tflite_bytes"),
            "params": limits.get("params"),
            "tuner": self.tuner,
            "epochs": self.epochs,
            "directory": self.directory,
            "plot": self.plot,
            "training": self.training,
        }
