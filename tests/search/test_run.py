import json
import os

import keras
import keras_tuner
import numpy as np
import pytest

from kstruct.errors import UnsupportedModelError
from kstruct.search import Budget, BudgetError, SearchError, run, space
from kstruct.search.tuner import BehindBestStopping, infeasible_score
from tests.search.conftest import tiny_cnn


def search(data, tmp_path, **kwargs):
    train, validation = data
    options = dict(tuner="random", max_trials=3, epochs=2, directory=str(tmp_path), latency_runs=10, seed=1)
    options.update(kwargs)
    return run(space(tiny_cnn()), train, validation, **options)


def test_unknown_budget_key_lists_the_valid_ones(data, tmp_path):
    with pytest.raises(SearchError, match="Unknown budget key 'latency'. Valid keys: tflite_bytes, latency_ms, params"):
        search(data, tmp_path, budget={"latency": 1.0})


def test_budget_values_must_be_positive_numbers():
    with pytest.raises(SearchError, match="positive number"):
        Budget.from_mapping({"params": -3})


def test_bad_tuner_and_subclassed_model_are_refused(data, tmp_path):
    with pytest.raises(SearchError, match="tuner"):
        search(data, tmp_path, tuner="grid")

    class Net(keras.Model):
        def call(self, x):
            return x

    net = Net()
    net(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(UnsupportedModelError, match="subclassed"):
        run(net, *data, directory=str(tmp_path))


def test_trials_over_budget_are_recorded_and_the_best_is_within_budget(data, tmp_path):
    full_params = tiny_cnn().count_params()
    budget = {"params": int(full_params * 0.6)}
    result = search(data, tmp_path, budget=budget, max_trials=5)
    assert len(result.trials) == 5
    for trial in result.trials:
        assert trial.params is not None and trial.tflite_bytes > 0 and trial.latency_ms > 0
        assert trial.feasible == (trial.params <= budget["params"])
        if not trial.feasible:
            assert not trial.trained  # over budget before training: not trained
    assert result.best_trial.feasible
    assert result.best_model.count_params() <= budget["params"]
    assert result.best_model.output_shape == (None, 3)
    feasible = [t.objective for t in result.trials if t.feasible]
    assert result.best_trial.objective == max(feasible)
    # The returned model holds the best epoch's weights: it scores what the trial reported.
    (xv, yv) = data[1]
    assert result.best_model.evaluate(xv, yv, verbose=0)[1] == pytest.approx(result.best_trial.objective, abs=1e-6)
    # The oracle saw the worst score for every infeasible trial.
    for trial_file in sorted((tmp_path / "kstruct_search").glob("trial_*/trial.json")):
        saved = json.loads(trial_file.read_text())
        score = saved["score"]
        record = next(t for t in result.trials if t.trial_id == saved["trial_id"])
        if not record.feasible:
            assert score < 0 <= min(feasible)


def test_a_budget_no_candidate_meets_fails_after_the_search_with_the_smallest_seen(data, tmp_path):
    with pytest.raises(BudgetError, match=r"no trial met budget tflite_bytes <= 10; smallest seen over 2 trials: tflite_bytes=\d+") as info:
        search(data, tmp_path, budget={"tflite_bytes": 10}, max_trials=2)
    assert len(info.value.result.trials) == 2
    assert not any(t.feasible for t in info.value.result.trials)


def test_result_reports_overhead_memory_and_pareto_fronts(data, tmp_path):
    result = search(data, tmp_path, max_trials=3)
    assert 0.0 <= result.overhead <= 1.0
    assert result.peak_rss_mb > 0 and len(result.rss_mb_after_trials) == 3
    for front, cost in ((result.pareto_size, "tflite_bytes"), (result.pareto_latency, "latency_ms")):
        assert front
        others = [t for t in result.trials if t.trained and t not in front]
        for t in others:  # every trial off the front is dominated by one on it
            assert any(f.objective >= t.objective and getattr(f, cost) <= getattr(t, cost) for f in front)
    assert "val_accuracy" in result.table()
    assert json.loads(json.dumps(result.to_dict()))["trials"]


def test_a_user_build_function_is_accepted(data, tmp_path):
    def build(hp):
        model = keras.Sequential(
            [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(hp.Choice("units", [4, 8]), activation="relu"),
             keras.layers.Dense(3, activation="softmax")]
        )
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    result = run(build, *data, tuner="random", max_trials=2, epochs=1, directory=str(tmp_path), latency_runs=5)
    assert {t.hyperparameters["units"] for t in result.trials} <= {4, 8}
    assert result.best_model is not None


def test_hyperband_runs_under_a_budget_capped_at_max_trials(data, tmp_path):
    result = search(data, tmp_path, tuner="hyperband", max_trials=3, budget={"params": 10**6})
    assert 1 <= len(result.trials) <= 3
    assert result.best_trial.feasible


def test_bayesian_runs_or_says_which_packages_it_needs(data, tmp_path):
    try:
        import scipy  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        with pytest.raises(SearchError, match=r"keras-tuner\[bayesian\]"):
            search(data, tmp_path, tuner="bayesian")
    else:
        result = search(data, tmp_path, tuner="bayesian", max_trials=3, budget={"params": 10**6})
        assert result.best_trial.feasible


def test_behind_best_stopping_stops_only_a_trial_clearly_behind():
    class Model:
        stop_training = False

    callback = BehindBestStopping("val_accuracy", "max", [0.8, 0.9, 0.95], margin=0.1)
    callback.set_params({"epochs": 3})
    callback.set_model(Model())
    callback.on_epoch_end(0, {"val_accuracy": 0.75})
    assert not callback.model.stop_training
    callback.on_epoch_end(1, {"val_accuracy": 0.5})
    assert callback.model.stop_training and callback.stopped_epoch == 1
    assert infeasible_score("max", 0.5) < 0 < infeasible_score("min", 0.5)
    assert infeasible_score("max", 0.1) > infeasible_score("max", 2.0)
