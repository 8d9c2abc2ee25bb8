import gc
import json

import keras
import keras_tuner
import numpy as np
import pytest

from kstruct.errors import UnsupportedModelError
from kstruct.search import Budget, BudgetError, SearchError, run, space
from kstruct.search import hypermodel as hypermodel_module
from kstruct.search.budget import with_trained_layout
from kstruct.search.callbacks import BehindBestStopping, BestWeightsAtEnd
from kstruct.search.tuner import infeasible_score
from tests.search.conftest import blob_data, tiny_cnn


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
    assert result.overhead == pytest.approx((result.wall_seconds - result.train_seconds) / result.wall_seconds)
    assert result.measure_seconds > 0 and result.build_seconds > 0
    assert result.train_seconds + result.measure_seconds + result.build_seconds <= result.wall_seconds
    summary = result.summary()
    assert f"overhead {100 * result.overhead:.1f}%" in summary and "3 trials" in summary
    assert gc.get_freeze_count() == 0  # the search unfroze what it froze
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


def _two_widths(hp):
    """Two structures only, so a 2-trial random search tries both: 4 units fit a
    1,000-parameter budget, 64 units (4,355 parameters) do not."""
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(hp.Choice("units", [4, 64]), activation="relu"),
         keras.layers.Dense(3, activation="softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_a_trial_over_budget_is_measured_once_recorded_and_never_trained(data, tmp_path, monkeypatch):
    calls = {"measure": 0, "fit": 0}
    real_measure, real_fit = hypermodel_module.measure, keras.Model.fit

    def counting_measure(*args, **kwargs):
        calls["measure"] += 1
        return real_measure(*args, **kwargs)

    def counting_fit(self, *args, **kwargs):
        calls["fit"] += 1
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(hypermodel_module, "measure", counting_measure)
    monkeypatch.setattr(keras.Model, "fit", counting_fit)
    result = run(_two_widths, *data, budget={"params": 1000}, tuner="random", max_trials=2, epochs=2,
                 directory=str(tmp_path), latency_runs=5, seed=0)
    over = next(t for t in result.trials if t.hyperparameters["units"] == 64)
    within = next(t for t in result.trials if t.hyperparameters["units"] == 4)
    assert calls == {"measure": 2, "fit": 1}  # one conversion per trial, none after training
    assert not over.feasible and not over.trained and over.epochs == 0 and over.objective is None
    assert over.params == 4355 and over.tflite_bytes > 0 and over.latency_ms > 0  # still reported
    assert not (tmp_path / "kstruct_search" / f"trial_{over.trial_id}" / "checkpoint.weights.h5").exists()
    assert within.feasible and within.trained and within.epochs == 2 and result.best_trial is within
    assert "1 over budget before training and not trained" in result.summary()


@pytest.fixture(scope="module")
def two_trained_trials(tmp_path_factory):
    """A two-trial search every trial of which trains, with the custom gradients TensorFlow's registry
    held before and after it (the search runs once for the two tests that read it)."""
    from tensorflow.python.framework import ops

    def custom_gradients():
        return {n for n in ops._gradient_registry._registry if n.startswith("CustomGradient-")}

    before = custom_gradients()
    result = search(blob_data(), tmp_path_factory.mktemp("two_trained_trials"), max_trials=2, budget={"params": 10**6})
    return result, before, custom_gradients()


def test_the_size_measured_before_training_is_the_trained_files_size(data, two_trained_trials):
    import tflite_export

    # tiny_cnn starts with zero biases, which the converter drops or merges.
    result, _, _ = two_trained_trials
    blob = tflite_export.convert(result.best_model, "int8", data[0][0][:16])
    assert len(blob) == result.best_trial.tflite_bytes


def test_with_trained_layout_changes_only_constant_weights_and_restores_them():
    model = tiny_cnn()
    before = model.get_weights()
    with with_trained_layout(model):
        inside = model.get_weights()
    for original, changed in zip(before, inside):
        if np.all(original == original.reshape(-1)[0]):  # the zero biases
            assert len(np.unique(changed)) == changed.size
        else:  # the random kernels
            np.testing.assert_array_equal(original, changed)
    for original, restored in zip(before, model.get_weights()):
        np.testing.assert_array_equal(original, restored)


def test_the_best_epochs_weights_are_written_once_when_training_ends(tmp_path, monkeypatch):
    saves = []
    real_save = keras.Model.save_weights
    monkeypatch.setattr(keras.Model, "save_weights", lambda self, path, **kw: (saves.append(path), real_save(self, path, **kw)))
    model = tiny_cnn()
    path = str(tmp_path / "checkpoint.weights.h5")
    callback = BestWeightsAtEnd(keras_tuner.Objective("val_accuracy", "max"), path)
    callback.set_model(model)
    epochs = []
    for epoch, accuracy in enumerate([0.5, 0.8, 0.6]):
        model.set_weights([w + 1.0 for w in model.get_weights()])  # stands in for an epoch of training
        epochs.append(model.get_weights())
        callback.on_epoch_end(epoch, {"val_accuracy": accuracy})
    assert saves == []
    callback.on_train_end()
    assert saves == [path]
    fresh = tiny_cnn()
    fresh.load_weights(path)
    for best, now, loaded in zip(epochs[1], model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(best, now)
        np.testing.assert_array_equal(best, loaded)


def test_trained_trials_leave_no_graph_in_tensorflows_gradient_registry(two_trained_trials):
    result, before, after = two_trained_trials
    assert all(t.trained for t in result.trials)
    assert after <= before


def test_screen_false_trains_a_trial_over_budget_but_keeps_it_infeasible(data, tmp_path):
    result = run(_two_widths, *data, budget={"params": 1000}, tuner="random", max_trials=2, epochs=1,
                 directory=str(tmp_path), latency_runs=5, seed=0, screen=False)
    over = next(t for t in result.trials if t.hyperparameters["units"] == 64)
    assert over.trained and over.objective is not None and not over.feasible
    assert result.best_trial.hyperparameters["units"] == 4
    assert "2 trained, 0 over budget before training" in result.summary()


def test_training_choices_reach_each_trials_compile_and_fit(data, tmp_path):
    """`space(..., training=True)`: every trial's optimizer, learning rate and batch size are its own."""
    from kstruct.search.space import SearchSpace

    seen = []

    class Recording(SearchSpace):
        def fit(self, hp, model, *args, **kwargs):
            history = super().fit(hp, model, *args, **kwargs)
            seen.append({
                "optimizer": type(model.optimizer).__name__.lower(),
                "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
                "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                "values": dict(hp.values),
            })
            return history

    (x, y), validation = data
    result = run(Recording(tiny_cnn(), training=True), (x, y), validation, max_trials=3, tuner="random", epochs=1,
                 budget={"params": 10**6}, directory=str(tmp_path), seed=3, latency_runs=5)
    assert len(seen) == 3 and len(result.trials) == 3
    for trial in seen:
        values = trial["values"]
        assert trial["optimizer"] == values["optimizer"]
        assert trial["learning_rate"] == pytest.approx(values["learning_rate"], rel=1e-5)
        assert trial["steps"] == -(-len(x) // values["batch_size"])  # one epoch at the trial's batch size
    assert len({(t["values"]["learning_rate"], t["values"]["batch_size"]) for t in seen}) == 3
