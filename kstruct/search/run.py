"""`run`: a Keras Tuner search under a deployment budget."""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Mapping

import keras_tuner

from kstruct.errors import KstructError
from kstruct.outputs import write_file
from kstruct.search import _project
from kstruct.search._memory import long_lived_objects_frozen
from kstruct.search.budget import Budget, BudgetError, Measurement, SearchError, smallest_seen
from kstruct.search.hypermodel import MeasuredHyperModel, SearchStats, TrialSettings, as_hypermodel
from kstruct.search.result import SearchResult, collect_result
from kstruct.search.tuner import TUNERS
from kstruct.engine.arguments import count_argument
from kstruct.engine.training import TrainingData, validation_split

# Calibration sets the int8 scales, which change neither a file's size nor its
# speed; a few samples make each trial's conversion cheaper than the default 200.
CALIBRATION_SAMPLES = 16


def run(
    space,
    train_data,
    validation_data=None,
    *,
    objective: str | keras_tuner.Objective = "val_accuracy",
    budget: Mapping[str, float] | Budget | None = None,
    target: str = "int8",
    tuner: str = "hyperband",
    max_trials: int = 10,
    epochs: int = 2,
    directory: str | os.PathLike | None = None,
    overwrite: bool = False,
    project_name: str = "kstruct_search",
    batch_size: int = 32,
    early_stopping: bool = True,
    screen: bool = True,
    seed: int | None = None,
    latency_runs: int = 50,
    verbose: int | str = 0,
) -> SearchResult:
    """Searches `space` with a Keras Tuner tuner; each trial is measured on `target`.

    Each trial's model is converted for `target` and timed on the LiteRT CPU
    runtime once, as built and before training (size and latency depend on the
    structure, not on the weight values); a trial over `budget` is recorded and
    scored worst, so Keras Tuner's oracle ranks it last, and with `screen=True` (the
    default) it is not trained at all. `result.overhead` says how much of the
    search's time went outside `fit`. The search resumes from `directory` (Keras
    Tuner's oracle state): finished trials are not run again, an interrupted one is.

    Args:
        space: a `keras_tuner.HyperModel` (e.g. `kstruct.search.space(model)`), a
            `build(hp)` function, or a Keras model (its space is derived).
        train_data / validation_data: `(x, y)` arrays, a `tf.data.Dataset` or a
            `keras.utils.PyDataset`; without validation data, the rule of `optimize`
            (`engine.training.validation_split`): 10% of array training data is held
            out, a finite dataset doubles as its own validation data.
        objective: the metric to maximize/minimize, as Keras Tuner takes it.
        budget: limits among `tflite_bytes`, `latency_ms`, `params`.
        target: the TFLite target (see `tflite_export.TARGETS`).
        tuner: "hyperband", "bayesian" or "random".
        max_trials: trials in all (for hyperband, a cap on its own schedule).
        epochs: training epochs per trial (hyperband: the most a trial gets).
        directory: where trials and the oracle state live; None: a new temporary one.
        overwrite: start afresh even if `directory` holds a search.
        early_stopping: stop random/bayesian trials clearly behind the best curve.
        screen: skip training a trial whose structure is over budget (False: train
            it anyway, e.g. to see it on the Pareto fronts).
        latency_runs: timed invocations per measurement (median taken).

    Returns:
        A `SearchResult`.

    Raises:
        SearchError: bad arguments, or `directory` holds a search with other settings.
        BudgetError: no trial met the budget (its `result` holds the trials).
        UnsupportedModelError: a subclassed model.
    """
    limits = _check_arguments(tuner, target, max_trials, epochs, budget)
    hypermodel, space_id = as_hypermodel(space, target)
    train = train_data if isinstance(train_data, TrainingData) else TrainingData(train_data, batch_size, "train_data")
    train, validation, _ = validation_split(train, validation_data, batch_size=batch_size)  # optimize's rule

    role = _project.role()
    directory = str(directory) if directory is not None else tempfile.mkdtemp(prefix="kstruct-search-")
    project_dir = os.path.join(directory, project_name)
    settings_path = os.path.join(project_dir, _project.SETTINGS_FILE)
    objective_name = objective if isinstance(objective, str) else objective.name
    recorded = {"space": space_id, "objective": objective_name, "budget": limits.limits(), "target": target,
                "tuner": tuner, "epochs": epochs}
    if role == "worker":
        overwrite = False  # only the chief may clear the shared directory
    if not overwrite:
        _project.check_settings(settings_path, recorded)

    stats = SearchStats()
    trial_settings = TrialSettings(
        budget=limits,
        target=target,
        representative=train.sample_inputs(CALIBRATION_SAMPLES),
        early_stopping=early_stopping and tuner != "hyperband",
        screen=screen,
        latency_runs=latency_runs,
    )
    search_tuner = _make_tuner(
        tuner, max_trials, epochs,
        hypermodel=MeasuredHyperModel(hypermodel, trial_settings, stats), objective=objective,
        directory=directory, project_name=project_name, overwrite=overwrite, seed=_project.tuner_seed(seed),
    )
    search_tuner._init_budget(trial_settings, stats)
    if role != "worker":
        os.makedirs(project_dir, exist_ok=True)
        # Atomic: a worker reading the settings never sees a half-written file.
        write_file(settings_path, json.dumps(recorded, indent=1).encode(), overwrite=True)

    with long_lived_objects_frozen():
        start = time.perf_counter()
        _search(search_tuner, train, validation, epochs, verbose)
        if role == "worker":
            _project.wait_for_all_trials(project_dir, timeout=600)
        wall = time.perf_counter() - start
        result = collect_result(search_tuner, project_dir, objective_name, limits, target, directory, wall, stats, role)
    if role != "worker":
        with open(os.path.join(project_dir, _project.RESULT_FILE), "w") as f:
            json.dump(result.to_dict(), f, indent=1)
    if result.best_trial is None:
        _raise_no_trial_met(result, limits)
    return result


def _check_arguments(tuner: str, target: str, max_trials, epochs, budget) -> Budget:
    """Refuses bad settings before any work; returns the budget's limits."""
    import tflite_export

    if tuner not in TUNERS:
        raise SearchError(f"Expected `tuner` to be one of {tuple(TUNERS)}. Received: tuner={tuner!r}")
    if target not in tflite_export.TARGETS:
        raise SearchError(f"Expected `target` to be one of {tflite_export.TARGETS}. Received: target={target!r}")
    count_argument("max_trials", max_trials, SearchError)
    count_argument("epochs", epochs, SearchError)
    return Budget.from_mapping(budget)


def _make_tuner(tuner: str, max_trials: int, epochs: int, **common) -> keras_tuner.Tuner:
    """The Keras Tuner tuner for `tuner`, with Keras Tuner's refusals said as SearchErrors."""
    try:
        if tuner == "hyperband":
            search_tuner = TUNERS[tuner](max_epochs=epochs, factor=3, **common)
            search_tuner.oracle.max_trials = max_trials
        else:
            search_tuner = TUNERS[tuner](max_trials=max_trials, **common)
    except ImportError as error:  # BayesianOptimization needs scipy and scikit-learn
        raise SearchError(
            f"tuner={tuner!r} needs packages that are not installed ({error}); "
            "install them with `pip install keras-tuner[bayesian]`, or use tuner='random' or 'hyperband'"
        ) from None
    except ValueError as error:
        if isinstance(error, KstructError):
            raise
        raise SearchError(f"Keras Tuner refused the search settings: {error}") from None
    return search_tuner


def _search(search_tuner: keras_tuner.Tuner, train: TrainingData, validation: TrainingData, epochs: int,
            verbose: int | str) -> None:
    """Runs the trials; Keras Tuner's fatal stops become SearchErrors."""
    try:
        search_tuner.search(**train.fit_arguments(), validation_data=validation.keras_data(), epochs=epochs, verbose=verbose)
    except keras_tuner.errors.FatalError as error:
        raise SearchError(str(error)) from None
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        raise SearchError(f"the search stopped: {str(error).strip()}") from None


def _raise_no_trial_met(result: SearchResult, limits: Budget) -> None:
    measured = [Measurement(t.tflite_bytes, t.latency_ms, t.params) for t in result.trials if t.tflite_bytes is not None]
    raise BudgetError(
        f"no trial met budget {limits}; smallest seen over {len(result.trials)} trials: "
        f"{smallest_seen(measured, limits)}. Allow more, or search narrower widths.",
        result,
    )
