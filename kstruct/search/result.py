"""What a search found: one record per trial, the best within budget, the Pareto fronts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import keras

from kstruct.search._memory import peak_rss_mb
from kstruct.search._project import load_trials
from kstruct.search.budget import Budget


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


def record(trial) -> TrialRecord:
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


def pareto_front(trials: Sequence[TrialRecord], cost: str, *, direction: str = "max") -> list[TrialRecord]:
    """The trials no other trial beats on both the objective and `cost` (lower is better).

    Only trained, measured trials take part; the front is sorted by cost.
    """
    points = [t for t in trials if t.objective is not None and getattr(t, cost) is not None]
    sign = 1.0 if direction == "max" else -1.0

    def dominates(a, b) -> bool:
        a_obj, b_obj = sign * a.objective, sign * b.objective
        a_cost, b_cost = getattr(a, cost), getattr(b, cost)
        return a_obj >= b_obj and a_cost <= b_cost and (a_obj > b_obj or a_cost < b_cost)

    front = [t for t in points if not any(dominates(o, t) for o in points if o is not t)]
    return sorted(front, key=lambda t: (getattr(t, cost), -sign * t.objective))


def collect_result(search_tuner, project_dir, objective_name, limits, target, directory, wall, stats, role) -> SearchResult:
    measure_seconds, build_seconds = stats.measure_seconds, stats.build_seconds  # before load_model builds again
    trials = load_trials(project_dir)
    records = [record(t) for t in trials]
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
