"""The `auto` strategy step: give it the budget, it finds the chain (`auto(speedup=2, max_accuracy_drop=0.01)`)."""

from __future__ import annotations

import keras

from kstruct.auto.budget import Budget
from kstruct.auto.run import AutoSearch
from kstruct.engine.log import say
from kstruct.engine.step import Step, StepResult
from kstruct.engine.training import StepContext
from kstruct.engine.workdir import working_directory


class Auto(Step):
    """Searches compression chains and their fine-tuning under a budget; hands on the best trial.

    Every registered step that declares a search space (`Step.search_space`) takes part:
    `drop_blocks`, `prune_channels`, and for an integer target `qat` or `ptq`; `prune` and
    `cluster` where the budget counts the gzipped file. Every training step in a trial gets
    the trial's epochs, optimizer, learning rate, schedule, batch size and distillation.
    The step's report row holds every trial; `OptimizationResult.strategy` is the chosen
    chain as a plain strategy string that `optimize` reproduces.

    Args: those of `kstruct.Budget`, and
        directory: Keras Tuner's project folder; run again with the same folder, a search
            resumes where it stopped. Default: a temporary folder, removed (with every
            trial's files) when the step ends.
        seed: the oracle's seed.
    """

    name = "auto"
    trains = True
    quantizes = True  # the chain it picks may end in qat or ptq: nothing that trains may follow

    def __init__(
        self,
        *,
        max_accuracy_drop: float = 0.01,
        speedup: float | None = None,
        compression: float | None = None,
        latency_ms: float | None = None,
        tflite_bytes: int | None = None,
        params: int | None = None,
        trials: int = 20,
        tuner: str = "bayesian",
        epochs: int | None = None,
        timeout: float | None = None,
        patience: int | None = None,
        directory: str | None = None,
        seed: int = 0,
    ):
        self.budget = Budget(
            max_accuracy_drop=max_accuracy_drop, speedup=speedup, compression=compression, latency_ms=latency_ms,
            tflite_bytes=tflite_bytes, params=params, trials=trials, tuner=tuner, epochs=epochs, timeout=timeout,
            patience=patience,
        )
        if directory is not None and not isinstance(directory, str):
            raise ValueError(f"Expected `directory` to be a folder path. Received: directory={directory!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Expected `seed` to be an int >= 0. Received: seed={seed!r}")
        self.directory = directory
        self.seed = seed

    @classmethod
    def from_budget(cls, budget: Budget, **options) -> "Auto":
        """The step for a `kstruct.Budget` (`optimize(model, kstruct.Budget(speedup=2), ...)`)."""
        fields = {key: getattr(budget, key) for key in (
            "max_accuracy_drop", "speedup", "compression", "latency_ms", "tflite_bytes", "params", "trials",
            "tuner", "epochs", "timeout", "patience")}
        return cls(**fields, **options)

    def get_config(self) -> dict:
        budget = self.budget
        return {
            "max_accuracy_drop": budget.max_accuracy_drop, "speedup": budget.speedup, "compression": budget.compression,
            "latency_ms": budget.latency_ms, "tflite_bytes": budget.tflite_bytes, "params": budget.params,
            "trials": budget.trials, "tuner": budget.tuner, "epochs": budget.epochs, "timeout": budget.timeout,
            "patience": budget.patience, "directory": self.directory, "seed": self.seed,
        }

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        with working_directory(self.directory, "kstruct-auto-") as directory:
            search = AutoSearch(model, context, self.budget, directory, say=lambda line: say(line, context.verbose),
                                seed=self.seed)
            result = search.run()
            say(f"auto: chose {result.strategy or '(no step)'}", context.verbose)
            notes = {**result.to_dict(), "directory": self.directory}  # None: the temporary folder is gone
            return StepResult(model=context.compile(result.model), tflite=result.tflite, notes={"auto": notes})
