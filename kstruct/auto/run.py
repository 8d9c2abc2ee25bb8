"""Running `auto`: Keras Tuner proposes chains, each trial is measured cheap first, then trained.

One trial: the oracle's hyperparameters become a chain (`kstruct.auto.space.chain`); the
chain's structure (channels and blocks removed, untrained) is converted for the target and
timed, and a structure that cannot meet the budget is recorded as infeasible without any
training. Otherwise the chain runs as `optimize` would run it, and its TFLite file is scored
on the validation data and timed on LiteRT. The oracle minimizes one score: the budget's
goal cost relative to the original (latency, gzipped or raw size, parameters) for a trial
within budget, and 10 plus how far it missed for one that is not (`_infeasible_score`), so
every oracle ranks an infeasible trial last and the one that missed least first among those.
"""

from __future__ import annotations

import dataclasses
import gc
import gzip
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import keras_tuner
import tflite_export
from tflite_export.targets import TARGET_TABLE

from kstruct.auto.budget import Budget, Cost, compression, speedup
from kstruct.auto.space import TRAINING_SETTINGS, chain, chain_text, searched_steps
from kstruct.distillation import check_teacher
from kstruct.engine.distribute import clear_session
from kstruct.engine.params import count_params
from kstruct.engine.search_info import SpaceInfo
from kstruct.engine.training import StepContext
from kstruct.errors import DistillationError, KstructError
from kstruct.outputs import write_file
from kstruct.report.measure import measure_stage
from kstruct.search import _project
from kstruct.search._memory import trial_gradients_dropped

_RANKING_SAMPLES = 64  # validation inputs a step's space may rank layers on (SpaceInfo.validation_inputs)
from kstruct.search.budget import BudgetError, SearchError
from kstruct.engine.step import Step

logger = logging.getLogger("kstruct")

INFEASIBLE = 10.0  # the score of a trial over budget starts here; a feasible one is a cost ratio
# A structure that misses a cost limit is worse than one that meets it and loses accuracy: training
# settings can win accuracy back, not speed. So cost misses weigh more, and a structure refused
# before training (its accuracy unknown) pays as if it had lost a whole point of accuracy budget.
COST_MISS_WEIGHT = 5.0
GAIN = 0.02  # a trial within 2% of the best's cost is a tie, not a gain (latency noise); `patience` and `_better` agree
UNTRAINED_PENALTY = 1.0
NEAR_MISS_AFTER = 3  # trials started before the Bayesian oracle retrains a near miss (its own first points)
NEAR_MISS_RETRIES = 3  # retrainings of one near-miss structure
PRECHECK_TOLERANCE = 0.1  # an untrained structure is refused only if it misses a limit by more than this
ROW_FILE = "kstruct_auto_trial.json"
SETTINGS_FILE = "kstruct_auto.json"  # what a project folder was searched for; a resume must match it
LATENCY_RUNS = 200  # per timing; a small model's file runs in microseconds, where one run is mostly noise
WORKER_WAIT = 60.0  # seconds a worker waits for its chief's settings file
LATENCY_REPEATS = 3  # timings per file; the fastest median counts (noise only ever adds time)


@dataclass
class TrialRow:
    """One trial: the chain, what its file measured, and whether it met the budget (and why not)."""

    trial_id: str
    strategy: str
    status: str  # "feasible", "over budget", "over budget untrained", "failed"
    score: float
    trained: bool
    metric: float | None = None
    accuracy_drop: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    tflite_bytes: int | None = None
    gzip_bytes: int | None = None
    compression: float | None = None
    params: int | None = None
    epochs: int = 0
    seconds: float = 0.0
    why: str = ""
    missed: tuple[str, ...] = ()  # the limits it missed, by their budget names

    def __post_init__(self):
        self.missed = tuple(self.missed)  # a row read back from its JSON file holds a list

    @property
    def feasible(self) -> bool:
        return self.status == "feasible"

    @property
    def near_miss(self) -> bool:
        """Trained, within every cost limit, over the accuracy drop only: a structure that
        other training settings may bring within budget."""
        return self.trained and self.missed == ("max_accuracy_drop",)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self, index: int, total: int) -> str:
        """The CLI's progress line for this trial."""
        if self.status == "failed":
            return f"auto: trial {index}/{total} {self.strategy or '(no step)'}: failed: {self.why}"
        quality = "" if self.metric is None else f"metric {self.metric:.4f} (drop {self.accuracy_drop:+.4f}), "
        verdict = "feasible" if self.feasible else f"{self.status}: {self.why}"
        if self.latency_ms is None:  # an untrained structure under a parameters-only budget: no file made
            costs = f"{self.params:,} parameters"
        else:
            costs = (f"latency {self.latency_ms:.3f} ms ({self.speedup:.2f}x), {self.tflite_bytes:,} B "
                     f"({self.compression:.2f}x gzip)")
        return f"auto: trial {index}/{total} {self.strategy or '(no step)'}: {quality}{costs}, {verdict}"


@dataclass
class AutoResult:
    """What a finished `auto` search found."""

    budget: Budget
    original: Cost
    rows: list[TrialRow]
    best: TrialRow
    model: keras.Model
    tflite: bytes
    directory: str
    seconds: float

    @property
    def strategy(self) -> str:
        return self.best.strategy

    def to_dict(self) -> dict[str, Any]:
        feasible = [i for i, row in enumerate(self.rows, 1) if row.feasible]
        return {
            "budget": {"max_accuracy_drop": self.budget.max_accuracy_drop, **self.budget.limits()},
            "tuner": self.budget.tuner,
            "strategy": self.strategy,
            "original": self.original.as_dict(),
            "best_trial": self.best.as_dict(),
            "trials": [row.as_dict() for row in self.rows],
            "trials_to_feasible": feasible[0] if feasible else None,
            "epochs_spent": sum(row.epochs for row in self.rows),
            "directory": self.directory,
            "seconds": self.seconds,
        }


def _infeasible_score(missed: dict[str, float], trained: bool) -> float:
    """How bad a trial over budget is, for the oracle: above every feasible score, lower when closer."""
    cost = sum(value for key, value in missed.items() if key != "max_accuracy_drop")
    accuracy = missed.get("max_accuracy_drop", 0.0)
    return INFEASIBLE + min(COST_MISS_WEIGHT * cost + accuracy + (0.0 if trained else UNTRAINED_PENALTY), 100.0)


def latency(blob: bytes) -> float:
    """One-thread LiteRT latency of a file in ms: the fastest of `LATENCY_REPEATS` medians."""
    return min(tflite_export.benchmark(blob, threads=1, runs=LATENCY_RUNS).median_ms for _ in range(LATENCY_REPEATS))


def _cost(blob: bytes, model: keras.Model, metric: float | None = None, latency_ms: float | None = None) -> Cost:
    if latency_ms is None:
        latency_ms = latency(blob)
    return Cost(
        latency_ms=float(latency_ms),
        tflite_bytes=len(blob),
        gzip_bytes=len(gzip.compress(blob, compresslevel=9)),
        params=count_params(model),
        metric=metric,
    )


class _ChainTuner(keras_tuner.Tuner):
    """Keras Tuner's `Tuner` whose trial is one chain run by `AutoSearch` (oracles unchanged)."""

    def __init__(self, oracle, search: "AutoSearch", **kwargs):
        super().__init__(oracle=oracle, **kwargs)
        self.auto = search

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        try:
            with trial_gradients_dropped():  # each trial's traced training graphs die with it (search does the same)
                row = self.auto.run_trial(trial.hyperparameters, trial.trial_id, Path(self.get_trial_dir(trial.trial_id)))
            # As Keras Tuner does before each model it builds: Keras's global state (TensorFlow's graph
            # and name scopes) forgets the trial's models, so memory stays flat across trials (not
            # under a distribution, whose scope that state holds).
            clear_session()
            gc.collect()
        except Exception as error:  # a bug, not a bad chain: stop the search and raise it as it is
            self.auto.error = error
            raise keras_tuner.errors.FatalError(str(error)) from error
        return {"score": row.score, "feasible": 1.0 if row.feasible else 0.0, "near_miss": 1.0 if row.near_miss else 0.0}

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        pass  # no TensorBoard callbacks here; Keras Tuner would import tensorboard for nothing


def _unjudged_untrained(plan: list[Step]) -> tuple[str, ...]:
    """The limits an untrained structure cannot be judged on: the gzipped size, where zeros or shared
    values come only with training (prune, cluster)."""
    return ("compression",) if any(step.name in ("prune", "cluster") for step in plan) else ()


def trials_without_gain(results: list[tuple[float, bool]]) -> int | None:
    """How many trials ended after the last one that set a new best feasible score, lower than the best
    before it by more than `GAIN` (auto's `patience` counts these); None while no trial is feasible.

    `results` is `(score, feasible)` per finished trial, in trial order.
    """
    best, since = None, None
    for score, feasible in results:
        if feasible and (best is None or score < best * (1 - GAIN)):
            best, since = score, 0
        elif since is not None:
            since += 1
    return since


class _DefaultsFirst:
    """An oracle whose first trial is every hyperparameter's default, the rest as the oracle samples them,
    and which starts no trial once `timed_out()` says auto's `timeout` has passed or `patience_spent(trials)`
    says its `patience` has.

    auto declares its whole space before the first trial (`AutoSearch._declare_space`): with the space
    left empty until a trial ended, a second worker asking meanwhile drew the empty values again, a
    duplicate, and Keras Tuner stopped it (and Hyperband stopped at once). The first trial stays the
    defaults, as it was when the empty space gave nothing else. The timeout is the oracle's to keep
    because only the oracle sees every request: on a chief, the workers' ask there (a worker's own oracle
    is a client without the trials)."""

    timed_out: Callable[[], bool] = staticmethod(lambda: False)
    first_values: dict[str, Any] = {}  # the first trial's values where they are not the defaults (`AutoSearch._first_guess`)
    patience_spent: Callable[[list], bool] = staticmethod(lambda trials: False)

    def populate_space(self, trial_id):
        if self.timed_out() or self.patience_spent(list(self.trials.values())):  # started trials still end and count
            return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)

    def _random_values(self):
        if self._tried_so_far:
            return super()._random_values()
        defaults = keras_tuner.HyperParameters()
        for hp in self.hyperparameters.space:
            defaults.merge([hp])  # a merged hyperparameter holds its default
        return {**defaults.values, **self.first_values}


class _RandomOracle(_DefaultsFirst, keras_tuner.oracles.RandomSearchOracle):
    pass


class _HyperbandOracle(_DefaultsFirst, keras_tuner.oracles.HyperbandOracle):
    pass


class _RetrainsNearMisses:
    """An oracle that, while no trial is feasible, gives every other trial to the closest near miss (a
    structure within every cost limit that lost too much accuracy) with its training settings drawn
    afresh, at most `NEAR_MISS_RETRIES` times per structure.

    Why: on the residual CNN the Bayesian oracle, fitted on trials that all missed, went on to
    aggressive structures while the defaults' `prune_channels(0.5)` had missed by a quarter of a point;
    random search met that budget with the same structure at another learning rate. A near miss says
    the structure is right and the training is not, so the next trial changes the training only.
    The rule reads finished trials alone, so a chief answering several workers and a resumed search
    propose what a single process would."""

    def populate_space(self, trial_id):
        values = self._near_miss_values()
        if values is None:
            return super().populate_space(trial_id)
        return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": values}

    def _near_miss_values(self) -> dict[str, Any] | None:
        started = sorted(self.trials.values(), key=lambda trial: trial.trial_id)
        finished = [trial for trial in started if trial.status == "COMPLETED"]
        if len(started) < NEAR_MISS_AFTER or len(started) % 2 == 0:  # every other trial stays the oracle's
            return None
        if any(trial.metrics.get_last_value("feasible") == 1.0 for trial in finished):
            return None

        def structure(values: dict[str, Any]) -> dict[str, Any]:
            return {key: value for key, value in values.items() if key not in TRAINING_SETTINGS}

        near = sorted((trial for trial in finished if trial.metrics.get_last_value("near_miss") == 1.0),
                      key=lambda trial: trial.score)
        for trial in near:
            shape = structure(trial.hyperparameters.values)
            if sum(structure(other.hyperparameters.values) == shape for other in started) > NEAR_MISS_RETRIES:
                continue
            for _ in range(10):  # a redraw that repeats an earlier trial is drawn again
                values = dict(trial.hyperparameters.values)
                for hp in self.hyperparameters.space:
                    if hp.name in TRAINING_SETTINGS and hp.name in values:
                        values[hp.name] = hp.random_sample(self._seed_state)
                        self._seed_state += 1
                if not self._duplicate(values):
                    logger.info("auto: the next trial retrains trial %s's structure (over the accuracy drop only) "
                                "with other training settings", trial.trial_id)
                    return values
        return None


class _BayesianOracle(_DefaultsFirst, _RetrainsNearMisses, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


def _oracle(budget: Budget, seed: int, max_epochs: int):
    objective = keras_tuner.Objective("score", direction="min")
    seed = _project.tuner_seed(seed)
    if budget.tuner == "random":
        return _RandomOracle(objective=objective, max_trials=budget.trials, seed=seed)
    if budget.tuner == "hyperband":  # fine-tuning epochs are its fidelity; `trials` caps its own schedule
        oracle = _HyperbandOracle(
            objective=objective, max_epochs=max(2, max_epochs), factor=3, hyperband_iterations=1, seed=seed
        )
        oracle.max_trials = budget.trials
        return oracle
    try:
        return _BayesianOracle(
            objective=objective, max_trials=budget.trials, num_initial_points=min(3, budget.trials), seed=seed
        )
    except ImportError:  # keras-tuner[bayesian] is a dependency; an environment may still lack scikit-learn
        raise SearchError(
            "auto's Bayesian oracle needs scikit-learn: pip install 'keras-tuner[bayesian]', or pass tuner='random'."
        ) from None


def _can_distill(teacher: keras.Model, student: keras.Model) -> bool:
    """Whether `distill=true` can run here at all (one output of class scores), so no trial is spent on it."""
    try:
        check_teacher(teacher, student)
    except DistillationError:
        return False
    return True


class AutoSearch:
    """One `auto` search over one model: the original measured once, then the trials.

    Args:
        model: the model every chain starts from (never modified).
        context: the `optimize` context (data, target, compile, teacher, tasks).
        budget: what the result must meet.
        directory: Keras Tuner's project directory; an existing one is resumed.
        say: where the per-trial lines go.
    """

    def __init__(
        self, model: keras.Model, context: StepContext, budget: Budget, directory: str,
        say: Callable[[str], None] = logger.info, seed: int = 0,
    ):
        self.model, self.budget, self.directory, self.say, self.seed = model, budget, directory, say, seed
        self.context = dataclasses.replace(context, verbose=0, tensorboard_dir=None, histories=[])
        self.max_epochs = budget.epochs or context.epochs
        self.x_val, self.y_val = context.validation.arrays()
        self.space = SpaceInfo(
            model=model,
            target=context.target,
            integer_target=TARGET_TABLE[context.target].quantize == "int8",  # full-integer files
            size_by_gzip=budget.size_by_gzip,
            array_data=context.train.is_arrays,
            max_epochs=self.max_epochs,
            four_bit_target=TARGET_TABLE[context.target].quantize == "int4",
            validation_inputs=keras.tree.map_structure(lambda a: a[:_RANKING_SAMPLES], self.x_val),
            latency_goal=budget.goal == "latency_ms",
            distillable=_can_distill(context.teacher or model, model),
        )
        self.higher_is_better = next(iter(context.tasks.values())).task != "regression" if context.tasks else True
        self.error: Exception | None = None
        self.kept: dict[str, tuple[keras.Model, bytes]] = {}  # the best trial so far, in memory
        self.started = time.perf_counter()
        self.stopped_early = False
        self.role = _project.role()  # "single", or "chief"/"worker" from Keras Tuner's KERASTUNER_* variables
        self.original, self.original_blob = self._measure_original()

    def _convert(self, model: keras.Model, **options: Any) -> bytes:
        return tflite_export.convert(model, self.context.target, representative_data=self.context.representative_inputs(),
                                     **options)

    def _measure(self, name: str, model: keras.Model, blob: bytes) -> tuple[Cost, Any]:
        stage = measure_stage(name, model, blob, self.x_val, self.y_val, tasks=self.context.tasks, latency_runs=5)
        return _cost(blob, model, stage.tflite_metric), stage  # the latency timed as every trial's is

    def _measure_original(self) -> tuple[Cost, bytes]:
        blob = self._convert(self.model)
        cost, stage = self._measure("original", self.model, blob)
        # The reference is the user's float Keras model; its file for the target is the cost reference.
        return dataclasses.replace(cost, metric=stage.keras_metric), blob

    def timed_out(self) -> bool:
        return self.budget.timeout is not None and time.perf_counter() - self.started > self.budget.timeout

    def patience_spent(self, trials: list[keras_tuner.engine.trial.Trial]) -> bool:
        """Whether `patience` trials in a row brought no better feasible trial (the oracle's trials: on a
        chief, every worker's). Says so once."""
        if self.budget.patience is None:
            return False
        done = sorted((t for t in trials if t.status == keras_tuner.engine.trial.TrialStatus.COMPLETED),
                      key=lambda t: t.trial_id)
        since = trials_without_gain(
            [(t.metrics.get_last_value("score"), t.metrics.get_last_value("feasible") == 1.0) for t in done]
        )
        if since is None or since < self.budget.patience:
            return False
        if not self.stopped_early:
            self.stopped_early = True
            self.say(f"auto: stopped after {len(done)} of {self.budget.trials} trials: the last {since} brought no "
                     f"feasible trial {GAIN:.0%} better (patience={self.budget.patience})")
        return True

    def _row(self, trial_id: str, plan: list[Step], cost: Cost, *, trained: bool, epochs: int, seconds: float) -> TrialRow:
        drop = self.budget.accuracy_drop(self.original, cost, self.higher_is_better) if trained else None
        skip = _unjudged_untrained(plan) if not trained else ()
        if not trained:  # an untrained structure is judged with some room for the latency noise
            missed = {k: v for k, v in self.budget.misses(self.original, cost, drop=None, skip=skip).items()
                      if v > PRECHECK_TOLERANCE}
        else:
            missed = self.budget.misses(self.original, cost, drop=drop)
        goal = getattr(cost, self.budget.goal) / max(getattr(self.original, self.budget.goal), 1e-12)
        status = ("feasible" if trained else "") if not missed else ("over budget" if trained else "over budget untrained")
        return TrialRow(
            trial_id=trial_id,
            strategy=chain_text(plan),
            status=status,
            score=float(goal if not missed else _infeasible_score(missed, trained)),
            trained=trained,
            metric=cost.metric,
            accuracy_drop=drop,
            latency_ms=cost.latency_ms,
            speedup=speedup(self.original, cost),
            tflite_bytes=cost.tflite_bytes,
            gzip_bytes=cost.gzip_bytes,
            compression=compression(self.original, cost),
            params=cost.params,
            epochs=epochs,
            seconds=seconds,
            why=self.budget.describe(self.original, cost, missed, drop) if missed else "",
            missed=tuple(missed),
        )

    def _structure_cost(self, plan: list[Step]) -> Cost:
        """The cost of the chain's structure before any training (the original's when no step changes it)."""
        current, changed = self.model, False
        for step in plan:
            shape = getattr(step, "structure", None)
            if shape is not None:
                current, changed = shape(current, self.context), True
        if not self.budget.reads_the_file:  # parameters only: converting and timing the file would decide nothing
            return Cost(latency_ms=None, tflite_bytes=None, gzip_bytes=None, params=count_params(current))
        options = {key: value for step in plan for key, value in step.export_options(current, self.context).items()}
        if not changed and not options:
            return dataclasses.replace(self.original, metric=None)
        return _cost(self._convert(current, **options), current)

    def run_trial(self, hp: keras_tuner.HyperParameters, trial_id: str, folder: Path) -> TrialRow:
        started = time.perf_counter()
        plan: list[Step] = []
        try:
            plan = chain(hp, self.space, epochs_from_tuner=hp.values.get("tuner/epochs"))
            before = self._structure_cost(plan)
            row = self._row(trial_id, plan, before, trained=False, epochs=0, seconds=time.perf_counter() - started)
            if row.status != "over budget untrained":
                model, blob, epochs = self._run_chain(plan)
                cost, _ = self._measure(trial_id, model, blob)
                row = self._row(trial_id, plan, cost, trained=True, epochs=epochs, seconds=time.perf_counter() - started)
                self._keep(row, model, blob, folder)
        except (KstructError, tflite_export.ExportError, RuntimeError) as error:
            # A chain this model, data or runtime cannot take (LiteRT raises RuntimeError for a file it cannot
            # run): recorded with its reason, and the search goes on. Anything else is a bug, and stops it.
            logger.warning("auto: trial %s (%s) failed: %s: %s", trial_id, chain_text(plan), type(error).__name__, error)
            row = TrialRow(trial_id, chain_text(plan), "failed", INFEASIBLE * 10, False, seconds=time.perf_counter() - started,
                           why=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        # Written beside, then moved: a search killed mid-write must leave no half row for the resume to read.
        write_file(folder / ROW_FILE, json.dumps(row.as_dict()).encode(), overwrite=True)
        done = len(self.rows())
        self.say(row.line(done, self.budget.trials))
        return row

    def _run_chain(self, plan: list[Step]) -> tuple[keras.Model, bytes, int]:
        context = dataclasses.replace(self.context, histories=[])
        for step in plan:
            check = getattr(step, "check_before_training", None)
            if check is not None:
                check(context)
        current, blob = self.model, None
        for index, step in enumerate(plan, 1):
            context.stage = f"auto_{index}_{step}"
            outcome = step.apply(current, context)
            current, blob = outcome.model, outcome.tflite
        epochs = sum(len(next(iter(h.values()), [])) for h in context.histories)
        return current, blob if blob is not None else self._convert(current), epochs

    def _keep(self, row: TrialRow, model: keras.Model, blob: bytes, folder: Path) -> None:
        """Keeps a feasible trial's model and file (on disk for a resumed search, in memory if best so far)."""
        if not row.feasible:
            return
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.keras")
        (folder / "model.tflite").write_bytes(blob)
        best = self.best_row()
        if best is None or self._better(row, best):
            self.kept = {row.trial_id: (model, blob)}

    def _better(self, row: TrialRow, other: TrialRow) -> bool:
        """Lower goal cost wins; within 2% of each other, the better metric."""
        if abs(row.score - other.score) <= GAIN * max(other.score, 1e-12):
            sign = 1 if self.higher_is_better else -1
            return sign * ((row.metric or 0.0) - (other.metric or 0.0)) > 0
        return row.score < other.score

    def rows(self) -> list[TrialRow]:
        """Every finished trial in this project directory (resumed ones included), in trial order."""
        rows = []
        for path in sorted(Path(self.directory).glob(f"*/trial_*/{ROW_FILE}")):
            rows.append(TrialRow(**json.loads(path.read_text())))
        return rows

    def best_row(self) -> TrialRow | None:
        best = None
        for row in self.rows():
            if row.feasible and (best is None or self._better(row, best)):
                best = row
        return best

    def _check_folder(self) -> None:
        """Records what this folder searches; refuses to resume a search of something else."""
        settings = {
            "budget": {key: value for key, value in asdict(self.budget).items() if key not in ("timeout", "patience")},
            "target": self.context.target,
            "model": self.model.name,
            "params": count_params(self.model),
            "seed": self.seed,
        }
        path = Path(self.directory) / SETTINGS_FILE
        if self.role == "worker":  # the chief writes the settings; a worker checks it searches the same
            deadline = time.monotonic() + WORKER_WAIT
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not path.exists():
                raise SearchError(f"No chief wrote {path} within {WORKER_WAIT:.0f} s; start the chief first, "
                                  "with the same directory=.")
        if path.exists():
            recorded = json.loads(path.read_text())
            if recorded != settings:
                changed = sorted(key for key in settings if recorded.get(key) != settings[key])
                raise SearchError(
                    f"{self.directory} holds an auto search with other settings ({', '.join(changed)}: "
                    f"{', '.join(repr(recorded.get(key)) for key in changed)}); resume it with the same ones, "
                    "or pass another directory=."
                )
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")  # atomic: a worker never reads half a file
        partial.write_text(json.dumps(settings))
        partial.replace(path)

    def _declare_space(self, oracle) -> None:
        """Gives the oracle the hyperparameters a chain of defaults declares, before any trial asks.

        Why: the chain declares its hyperparameters as it reads them, so the oracle's space stayed empty
        until the first trial ended; meanwhile another worker drew the empty values again and was told
        to stop, and Hyperband (which needs values to start a bracket) stopped at once. The defaults'
        path declares what the first trial did, so a single process samples the same trials as before."""
        hp = oracle.get_space()
        epochs = self.max_epochs if self.budget.tuner == "hyperband" else None  # Hyperband's own fidelity
        try:
            chain(hp, self.space, epochs_from_tuner=epochs)
        except KstructError:  # an invalid default chain: what it read is declared; the trial will say why
            pass
        oracle.update_space(hp)

    def _first_guess(self, oracle) -> dict[str, Any]:
        """The first trial's structure, measured untrained: the defaults, or where their structure misses a
        cost limit, the mildest change of one structural step (the most parameters kept) whose structure
        meets every cost limit. Why: measuring a structure costs a conversion and a timing, training it
        an epoch; a first trial that cannot meet the budget teaches the oracle little (NetAdapt and AMC
        likewise fix the structure to the budget before they fine-tune). Structural steps (those with a
        `structure`) declare their hyperparameter under their own name."""
        space = oracle.get_space()
        values = dict(space.values)

        def structure_misses(trial_values: dict[str, Any]) -> tuple[dict[str, float], int] | None:
            hp = oracle.get_space()
            hp.values.update(trial_values)
            try:
                plan = chain(hp, self.space)
                cost = self._structure_cost(plan)
            except (KstructError, tflite_export.ExportError):
                return None
            return self.budget.misses(self.original, cost, drop=None, skip=_unjudged_untrained(plan)), cost.params

        first = structure_misses(values)
        if first is None or not first[0]:
            return {}
        structural = {cls.name for cls in searched_steps() if hasattr(cls, "structure")}
        met = []
        for hp in space.space:
            if hp.name not in structural:
                continue
            choices = hp.values if isinstance(hp, keras_tuner.engine.hyperparameters.Choice) else range(
                hp.min_value, hp.max_value + 1)
            for value in choices:
                if value == values.get(hp.name):
                    continue
                measured = structure_misses({**values, hp.name: value})
                if measured is not None and not measured[0]:
                    met.append((measured[1], hp.name, value))
        if not met:
            return {}
        _, name, value = max(met, key=lambda item: item[0])  # the most parameters kept: the mildest change
        self.say(f"auto: first trial {name}={value}: the defaults' structure misses the budget untrained "
                 f"({', '.join(first[0])}), this one meets it")
        return {name: value}

    def run(self) -> AutoResult:
        """Runs the trials and returns the best one within budget.

        Raises:
            BudgetError: no trial met the budget; names the closest one and what it missed.
            SearchError: `directory` holds a search with another budget, target, model or seed.
        """
        self._check_folder()
        tuner = _ChainTuner(
            _oracle(self.budget, self.seed, self.max_epochs), self,
            directory=self.directory, project_name="auto", overwrite=False,
        )
        if self.role != "worker":  # a worker's oracle is the chief's
            self._declare_space(tuner.oracle)
            tuner.oracle.timed_out = self.timed_out
            if not self.rows():  # a resumed search keeps the trials it had
                tuner.oracle.first_values = self._first_guess(tuner.oracle)
            tuner.oracle.patience_spent = self.patience_spent
        try:
            tuner.search(verbose=0)  # on a chief: serves the oracle to the workers until the trials are done
        except keras_tuner.errors.FatalError:
            if self.error is not None:
                raise self.error from None
            raise
        if self.role == "worker":  # told to stop: the other workers' last trials still count
            _project.wait_for_all_trials(str(Path(self.directory) / "auto"), timeout=WORKER_WAIT * 10)
        rows = self.rows()
        best = self.best_row()
        if best is None:
            raise BudgetError(self._nothing_met(rows), result=rows)
        model, blob = self.kept.get(best.trial_id) or self._load(best)
        return AutoResult(self.budget, self.original, rows, best, model, blob, self.directory,
                          time.perf_counter() - self.started)

    def _load(self, row: TrialRow) -> tuple[keras.Model, bytes]:
        folder = next(Path(self.directory).glob(f"*/trial_{row.trial_id}"))
        with warnings.catch_warnings():  # the trial's optimizer state, saved mid-training, is not the result's
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.saving.load_model(folder / "model.keras")
        return model, (folder / "model.tflite").read_bytes()

    def _nothing_met(self, rows: list[TrialRow]) -> str:
        judged = [row for row in rows if row.status != "failed"]
        limits = ", ".join(f"{k}={v:g}" for k, v in self.budget.limits().items())
        if not rows:
            return (f"auto's timeout ({self.budget.timeout:g} s) passed before any trial started (measuring the "
                    "original model comes first); give it more time (timeout=...).")
        head = (f"No trial of {len(rows)} met the budget ({limits}, max_accuracy_drop={self.budget.max_accuracy_drop:g}) "
                f"on target {self.context.target!r}.")
        if not judged:
            reasons = "; ".join(dict.fromkeys(row.why for row in rows))
            return f"{head} Every trial failed: {reasons}"
        closest = min(judged, key=lambda row: row.score)
        return (f"{head} Closest: trial {closest.trial_id}, {closest.strategy or '(no step)'}: {closest.why}. "
                "Loosen the budget, or give auto more trials (trials=...) or epochs (epochs=...).")

