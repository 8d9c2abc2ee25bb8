"""`run`: a Keras Tuner search under a deployment budget, and what it found."""

from __future__ import annotations

import contextlib
import gc
import glob
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

import keras
import keras_tuner

from kstruct.errors import KstructError
from kstruct.search.budget import Budget, BudgetError, Measurement, SearchError, smallest_seen
from kstruct.outputs import write_file
from kstruct.search.pareto import pareto_front
from kstruct.search.tuner import TUNERS, MeasuredHyperModel, SearchStats, TrialSettings, peak_rss_mb
from kstruct.training import TrainingData, split_validation

SETTINGS_FILE = "kstruct_search.json"
RESULT_FILE = "kstruct_result.json"
_TERMINAL = ("COMPLETED", "FAILED", "STOPPED")
# Calibration sets the int8 scales, which change neither a file's size nor its
# speed; a few samples make each trial's conversion cheaper than the default 200.
CALIBRATION_SAMPLES = 16


@dataclass
class TrialRecord:
    """One trial as the search saw it. `objective` is the measured value (None when the
    trial was not trained because its structure was over budget already)."""

    trial_id: str
    status: str
    hyperparameters: dict[str, Any]
    objective: float | None = None
    tflite_bytes: int | None = None
    latency_ms: float | None = None
    params: int | None = None
    feasible: bool = False
    trained: bool = False
    epochs: int = 0
    stopped_early: bool = False
    rss_mb: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    """What `run` found.

    Attributes:
        best_model: the best trial within budget, trained, compiled (None on a worker
            that could not load it).
        best_trial: its record.
        trials: every trial, in trial-id order.
        pareto_size / pareto_latency: trained trials no other beats on both the
            objective and file size / latency (within budget or not), by cost.
        wall_seconds: this process's time in the search (its trials and Keras
            Tuner's bookkeeping; not loading the best model afterwards).
        train_seconds / measure_seconds / build_seconds: of that, inside `fit`;
            converting and timing the trials' files; building the trials' models.
        overhead: share of `wall_seconds` spent outside `fit` (building, measuring,
            Keras Tuner's clear_session and bookkeeping; a trial over budget before
            training is all overhead); None on a chief, which trains nothing.
        peak_rss_mb: this process's peak resident memory.
        rss_mb_after_trials: resident memory after each trial this process ran.
    """

    best_model: keras.Model | None
    best_trial: TrialRecord | None
    trials: list[TrialRecord]
    pareto_size: list[TrialRecord]
    pareto_latency: list[TrialRecord]
    objective: str
    direction: str
    budget: Budget
    target: str
    directory: str
    wall_seconds: float
    train_seconds: float
    overhead: float | None
    measure_seconds: float = 0.0
    build_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    rss_mb_after_trials: list[float] = field(default_factory=list)

    def table(self) -> str:
        """The trials as a text table, best first within budget."""
        header = f"{'trial':>6} {'feasible':>8} {self.objective:>14} {'bytes':>9} {'latency_ms':>10} {'params':>8} {'epochs':>6}"
        lines = [header]
        for t in self.trials:
            obj = "-" if t.objective is None else f"{t.objective:.4f}"
            lat = "-" if t.latency_ms is None else f"{t.latency_ms:.4f}"
            mark = "*" if self.best_trial is not None and t.trial_id == self.best_trial.trial_id else " "
            lines.append(
                f"{mark}{t.trial_id:>5} {('yes' if t.feasible else 'no'):>8} {obj:>14} {t.tflite_bytes or '-':>9} "
                f"{lat:>10} {t.params or '-':>8} {t.epochs:>6}{' (stopped early)' if t.stopped_early else ''}"
                f"{'' if t.status == 'COMPLETED' else ' ' + t.status}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """Two lines: what the trials came to, and where the search's time and memory went."""
        trained = sum(t.trained for t in self.trials)
        skipped = sum(not t.trained and t.status == "COMPLETED" for t in self.trials)
        lines = [
            f"{len(self.trials)} trials: {sum(t.feasible for t in self.trials)} within budget ({self.budget}), "
            f"{trained} trained, {skipped} over budget before training and not trained"
        ]
        if self.overhead is None:
            lines.append(f"search wall {self.wall_seconds:.1f} s (chief: its workers train)")
        else:
            other = self.wall_seconds - self.train_seconds - self.measure_seconds - self.build_seconds
            lines.append(
                f"search wall {self.wall_seconds:.1f} s: in fit {self.train_seconds:.1f} s, overhead "
                f"{100 * self.overhead:.1f}% (measuring {self.measure_seconds:.1f} s, building "
                f"{self.build_seconds:.1f} s, Keras Tuner and the rest {max(other, 0.0):.1f} s); "
                f"peak RSS {self.peak_rss_mb:.0f} MiB"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable summary (no model)."""
        return {
            "objective": self.objective,
            "direction": self.direction,
            "budget": self.budget.limits(),
            "target": self.target,
            "directory": self.directory,
            "best_trial": None if self.best_trial is None else self.best_trial.as_dict(),
            "trials": [t.as_dict() for t in self.trials],
            "pareto": {
                "tflite_bytes": [t.trial_id for t in self.pareto_size],
                "latency_ms": [t.trial_id for t in self.pareto_latency],
            },
            "wall_seconds": self.wall_seconds,
            "train_seconds": self.train_seconds,
            "measure_seconds": self.measure_seconds,
            "build_seconds": self.build_seconds,
            "overhead": self.overhead,
            "peak_rss_mb": self.peak_rss_mb,
            "rss_mb_after_trials": self.rss_mb_after_trials,
        }


def _role() -> str:
    """"single", "chief" or "worker", from Keras Tuner's own environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _as_hypermodel(space, target: str) -> tuple[keras_tuner.HyperModel, str]:
    """The space as a HyperModel, and an id of it for the settings check on resume."""
    from kstruct.search.space import SearchSpace, space as derive

    if isinstance(space, keras.Model):
        space = derive(space, target=target)
    if isinstance(space, SearchSpace):
        return space, f"derived:{space.signature}"
    if isinstance(space, keras_tuner.HyperModel):
        return space, f"hypermodel:{type(space).__module__}.{type(space).__qualname__}"
    if callable(space):
        name = getattr(space, "__qualname__", type(space).__name__)
        return _FunctionHyperModel(space), f"function:{name}"
    raise SearchError(
        "Expected `space` to be a keras_tuner.HyperModel, a build(hp) function or a Keras model. "
        f"Received: an object of type {type(space).__name__}"
    )


class _FunctionHyperModel(keras_tuner.HyperModel):
    """A user's `build(hp)` function as a HyperModel."""

    def __init__(self, function: Callable):
        super().__init__(name=getattr(function, "__name__", None))
        self.function = function

    def build(self, hp):
        return self.function(hp)


def _check_settings(path: str, settings: dict) -> None:
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    changed = [k for k in settings if k in saved and saved[k] != settings[k]]
    if changed:
        diffs = "; ".join(f"{k}: {saved[k]!r} -> {settings[k]!r}" for k in changed)
        raise SearchError(
            f"{os.path.dirname(path)} holds a search with other settings ({diffs}). Resuming would mix them: "
            "pass overwrite=True (CLI: --overwrite) to start afresh, or use another directory"
        )


def _load_trials(project_dir: str) -> list[keras_tuner.engine.trial.Trial]:
    trials = []
    for path in sorted(glob.glob(os.path.join(project_dir, "trial_*", "trial.json"))):
        for _ in range(20):  # a file being rewritten by the chief: read again
            try:
                trials.append(keras_tuner.engine.trial.Trial.load(path))
                break
            except (ValueError, KeyError, OSError):
                time.sleep(0.1)
    return sorted(trials, key=lambda t: t.trial_id)


def _record(trial) -> TrialRecord:
    metrics = trial.metrics

    def value(name):
        if not metrics.exists(name):
            return None
        v = metrics.get_last_value(name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    trained = bool(value("trained"))
    objective = value("measured_objective") if trained else None
    size, params = value("tflite_bytes"), value("params")
    return TrialRecord(
        trial_id=trial.trial_id,
        status=trial.status,
        hyperparameters={k: v for k, v in trial.hyperparameters.values.items()},
        objective=objective,
        tflite_bytes=None if size is None else int(size),
        latency_ms=value("latency_ms"),
        params=None if params is None else int(params),
        feasible=trial.status == "COMPLETED" and bool(value("feasible")),
        trained=trained,
        epochs=int(value("epochs") or 0),
        stopped_early=bool(value("stopped_early")),
        rss_mb=value("rss_mb"),
    )


def _wait_for_all_trials(project_dir: str, timeout: float) -> None:
    """A worker that was told to stop waits for the other workers' last trials."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(t.status in _TERMINAL for t in _load_trials(project_dir)):
            return
        time.sleep(1.0)


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
            `keras.utils.PyDataset`; without validation data, 10% of array training
            data is held out.
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
    import tflite_export

    if tuner not in TUNERS:
        raise SearchError(f"Expected `tuner` to be one of {tuple(TUNERS)}. Received: tuner={tuner!r}")
    if target not in tflite_export.TARGETS:
        raise SearchError(f"Expected `target` to be one of {tflite_export.TARGETS}. Received: target={target!r}")
    for name, value in (("max_trials", max_trials), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SearchError(f"Expected `{name}` to be a positive int. Received: {name}={value!r}")
    limits = Budget.from_mapping(budget)
    hypermodel, space_id = _as_hypermodel(space, target)
    train = train_data if isinstance(train_data, TrainingData) else TrainingData(train_data, batch_size, "train_data")
    if validation_data is None:
        if not train.is_arrays:
            raise SearchError("Pass validation_data with a dataset: 10% can be held out of array data only.")
        train, validation = split_validation(train)
    else:
        validation = (
            validation_data if isinstance(validation_data, TrainingData)
            else TrainingData(validation_data, batch_size, "validation_data")
        )

    role = _role()
    directory = str(directory) if directory is not None else tempfile.mkdtemp(prefix="kstruct-search-")
    project_dir = os.path.join(directory, project_name)
    settings_path = os.path.join(project_dir, SETTINGS_FILE)
    objective_name = objective if isinstance(objective, str) else objective.name
    recorded = {"space": space_id, "objective": objective_name, "budget": limits.limits(), "target": target,
                "tuner": tuner, "epochs": epochs}
    if role == "worker":
        overwrite = False  # only the chief may clear the shared directory
    if not overwrite:
        _check_settings(settings_path, recorded)

    stats = SearchStats()
    trial_settings = TrialSettings(
        budget=limits,
        target=target,
        representative=train.arrays(limit=CALIBRATION_SAMPLES)[0],
        early_stopping=early_stopping and tuner != "hyperband",
        screen=screen,
        latency_runs=latency_runs,
    )
    wrapped = MeasuredHyperModel(hypermodel, trial_settings, stats)
    common = dict(hypermodel=wrapped, objective=objective, directory=directory, project_name=project_name,
                  overwrite=overwrite, seed=seed)
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
    search_tuner._init_budget(trial_settings, stats)
    if role != "worker":
        os.makedirs(project_dir, exist_ok=True)
        # Atomic: a worker reading the settings never sees a half-written file.
        write_file(settings_path, json.dumps(recorded, indent=1).encode(), overwrite=True)

    with _long_lived_objects_frozen():
        start = time.perf_counter()
        try:
            search_tuner.search(
                **train.fit_arguments(),
                validation_data=validation.source,
                epochs=epochs,
                verbose=verbose,
            )
        except keras_tuner.errors.FatalError as error:
            raise SearchError(str(error)) from None
        except RuntimeError as error:
            if "consecutive failures" not in str(error):
                raise
            raise SearchError(f"the search stopped: {str(error).strip()}") from None
        if role == "worker":
            _wait_for_all_trials(project_dir, timeout=600)
        wall = time.perf_counter() - start
        result = _result(search_tuner, project_dir, objective_name, limits, target, directory, wall, stats, role)
    if role != "worker":
        with open(os.path.join(project_dir, RESULT_FILE), "w") as f:
            json.dump(result.to_dict(), f, indent=1)
    if result.best_trial is None:
        measured = [Measurement(t.tflite_bytes, t.latency_ms, t.params) for t in result.trials
                    if t.tflite_bytes is not None]
        raise BudgetError(
            f"no trial met budget {limits}; smallest seen over {len(result.trials)} trials: "
            f"{smallest_seen(measured, limits)}. Allow more, or search narrower widths.",
            result,
        )
    return result


@contextlib.contextmanager
def _long_lived_objects_frozen() -> Iterator[None]:
    """Moves every object alive now out of the garbage collector's reach for the block.

    Why: Keras Tuner collects garbage twice before each trial (and once more to load
    the best model); with TensorFlow and Keras loaded each full collection took about
    0.1 s, mostly re-scanning objects that live as long as the process. Frozen, it
    scans only what the trials made (5-15 ms). Left alone if the caller froze objects
    already (gc.freeze is process-wide).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _result(search_tuner, project_dir, objective_name, limits, target, directory, wall, stats, role) -> SearchResult:
    measure_seconds, build_seconds = stats.measure_seconds, stats.build_seconds  # before load_model builds again
    trials = _load_trials(project_dir)
    records = [_record(t) for t in trials]
    direction = search_tuner.oracle.objective.direction
    sign = 1.0 if direction == "max" else -1.0
    candidates = [r for r in records if r.feasible and r.trained and r.objective is not None]
    best = max(candidates, key=lambda r: (sign * r.objective, -(r.latency_ms or 0.0)), default=None)
    best_model = None
    if best is not None:
        trial = next(t for t in trials if t.trial_id == best.trial_id)
        best_model = search_tuner.load_model(trial)
    trained = [r for r in records if r.trained]
    return SearchResult(
        best_model=best_model,
        best_trial=best,
        trials=records,
        pareto_size=pareto_front(trained, "tflite_bytes", direction=direction),
        pareto_latency=pareto_front(trained, "latency_ms", direction=direction),
        objective=objective_name,
        direction=direction,
        budget=limits,
        target=target,
        directory=directory,
        wall_seconds=wall,
        train_seconds=stats.train_seconds,
        overhead=None if role == "chief" or wall <= 0 else max(0.0, (wall - stats.train_seconds) / wall),
        measure_seconds=measure_seconds,
        build_seconds=build_seconds,
        peak_rss_mb=peak_rss_mb(),
        rss_mb_after_trials=list(stats.rss_after_trial),
    )
