"""`auto`: the budget in, the chain out. Tiny models and data; a params budget, which is exact,
so the tests do not depend on timing noise (benchmarks/auto.py measures speed budgets)."""

import re
import tempfile

import keras
import numpy as np
import pytest

import kstruct
from kstruct.errors import StrategyError
from kstruct.search.budget import BudgetError
from kstruct.strategy import Strategy
from tests.search.conftest import blobs, tiny_cnn


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    x, y = blobs(n=300)
    model = tiny_cnn()
    model.fit(x[:240], y[:240], epochs=3, batch_size=32, verbose=0)
    return model, (x[:240], y[:240]), (x[240:], y[240:])


@pytest.mark.parametrize(
    "strategy, message",
    [
        ("auto", "auto needs at least one budget: speedup=, compression=, latency_ms=, tflite_bytes= or params="),
        ("auto(max_accuracy_drop=0.01)", "auto needs at least one budget"),
        ("auto(speedup=-2)", "Expected `speedup` to be a positive number. Received: speedup=-2"),
        ("auto(params=0)", "Expected `params` to be a positive int. Received: params=0"),
        ("auto(params=1.5)", "Expected `params` to be a positive int. Received: params=1.5"),
        ("auto(speedup=2, max_accuracy_drop=1.5)", "Expected `max_accuracy_drop` in [0, 1] (0.01 is one point). Received: max_accuracy_drop=1.5"),
        ("auto(speedup=2, max_accuracy_drop=-0.1)", "Expected `max_accuracy_drop` in [0, 1]"),
        ("auto(speed=2)", "Auto.__init__() got an unexpected keyword argument 'speed'"),
        ("auto(speedup=2, tuner='grid')", "Expected `tuner` to be one of ('bayesian', 'random', 'hyperband'). Received: tuner='grid'"),
        ("auto(speedup=2, trials=0)", "Expected `trials` to be a positive int. Received: trials=0"),
        ("auto(speedup=2, timeout=-1)", "Expected `timeout` to be a positive number. Received: timeout=-1"),
        ("auto(speedup=2, seed=-1)", "Expected `seed` to be an int >= 0. Received: seed=-1"),
        ("auto(speedup=2, patience=0)", "Expected `patience` to be a positive int. Received: patience=0"),
    ],
)
def test_a_bad_budget_is_refused_in_one_line(strategy, message):
    with pytest.raises(StrategyError) as caught:
        Strategy.parse(strategy)
    text = str(caught.value)
    assert "\n" not in text and message in text, text


def test_the_budget_object_and_the_strategy_string_are_the_same_budget():
    step = Strategy.parse("auto(speedup=2, max_accuracy_drop=0.005, trials=7, tuner='random', patience=3)").steps[0]
    assert step.budget == kstruct.Budget(speedup=2, max_accuracy_drop=0.005, trials=7, tuner="random", patience=3)
    assert Strategy.parse(str(Strategy([step]))) == Strategy([step])
    with pytest.raises(StrategyError, match="auto needs at least one budget"):
        kstruct.Budget(max_accuracy_drop=0.01)
    assert kstruct.Budget(speedup=2).goal == "latency_ms" and kstruct.Budget(compression=4).goal == "gzip_bytes"


def test_nothing_may_train_after_auto():
    with pytest.raises(StrategyError, match="auto"):
        Strategy.parse("auto(params=100) + prune(0.5)").validate("float32")


@pytest.fixture(scope="module")
def searched(trained, tmp_path_factory):
    model, train, validation = trained
    limit = int(model.count_params() * 0.6)
    weights = [w.copy() for w in model.get_weights()]
    temporary, default = tmp_path_factory.mktemp("tmpdir"), tempfile.tempdir
    tempfile.tempdir = str(temporary)  # where the trials go without directory=
    try:
        result = kstruct.optimize(
            model, kstruct.Budget(params=limit, max_accuracy_drop=0.34, trials=3, epochs=1, tuner="random"),
            train_data=train, validation_data=validation, target="float32", verbose=0,
        )
    finally:
        tempfile.tempdir = default
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))  # the user's model is untouched
    # TensorFlow's autograph writes the code it generates there too, and leaves it: not kstruct's to remove.
    return result, limit, sorted(p.name for p in temporary.iterdir() if not p.name.startswith("__autograph_generated"))


def test_without_a_directory_the_trials_files_are_removed_when_the_step_ends(searched):
    result, _, left_in_tmp = searched
    assert left_in_tmp == []  # three trials' model.keras and model.tflite were there
    assert result.report.stages[-1].notes["auto"]["directory"] is None


def test_auto_returns_a_trial_within_the_budget_and_records_every_trial(searched):
    result, limit, _ = searched
    assert len(result.trials) == 3
    assert {row["status"] for row in result.trials} <= {"feasible", "over budget", "over budget untrained", "failed"}
    chosen = result.report.stages[-1].notes["auto"]["best_trial"]
    assert chosen["status"] == "feasible" and chosen["params"] <= limit
    assert result.model.count_params() == chosen["params"] <= limit
    assert result.report.stages[-1].params == chosen["params"]
    assert result.strategy == chosen["strategy"] and "auto" not in result.strategy
    for row in result.trials:  # a structure over budget is never trained
        if row["status"] == "over budget untrained":
            assert row["epochs"] == 0 and row["metric"] is None and "params" in row["why"]
        if row["status"] == "feasible":
            assert row["epochs"] >= 1 and row["accuracy_drop"] <= 0.34
    original = result.report.stages[0]
    assert chosen["accuracy_drop"] == pytest.approx(original.keras_accuracy - chosen["metric"])
    assert set(result.plot()) == {"stages", "layers", "training", "auto"}


def test_the_chosen_chain_reproduces_with_optimize(trained, searched):
    model, train, validation = trained
    result, limit, _ = searched
    again = kstruct.optimize(model, result.strategy, train_data=train, validation_data=validation, target="float32", verbose=0)
    assert again.report.stages[-1].params == result.report.stages[-1].params <= limit
    assert abs(again.report.stages[-1].tflite_accuracy - result.report.stages[-1].tflite_accuracy) <= 0.15


def test_trials_differ_in_their_training_settings(searched):
    result, _, _ = searched
    settings = set()
    for row in result.trials:
        steps = Strategy.parse(row["strategy"]) if row["strategy"] else []
        for step in steps:
            if getattr(step, "settings", None) is not None:
                settings.add((step.settings.learning_rate, step.settings.batch_size, step.epochs))
    assert len(settings) >= 2, result.trials


def test_a_budget_nothing_meets_raises_and_names_the_closest_trial(trained):
    model, train, validation = trained
    with pytest.raises(BudgetError) as caught:
        kstruct.optimize(
            model, "auto(params=10, trials=2, epochs=1)",  # the default oracle: Bayesian
            train_data=train, validation_data=validation, target="float32", verbose=0,
        )
    text = str(caught.value)
    assert re.match(r"No trial of 2 met the budget \(params=10, max_accuracy_drop=0.01\) on target 'float32'\. Closest: trial \d+, ", text), text
    assert "params" in text and "> 10" in text and len(caught.value.result) == 2


def test_a_parameters_only_budget_judges_untrained_structures_without_making_their_files(trained, capsys):
    """Under `params=` alone a structure over the limit is refused from its parameter count: its file
    is never converted nor timed (the row holds no file figures), and its line says what was judged."""
    model, train, validation = trained
    with pytest.raises(BudgetError) as caught:
        kstruct.optimize(
            model, "auto(params=10, trials=2, epochs=1, tuner='random')",
            train_data=train, validation_data=validation, target="float32", verbose=1,
        )
    rows = caught.value.result
    assert [row.status for row in rows] == ["over budget untrained"] * 2, rows
    assert all(row.latency_ms is row.speedup is row.tflite_bytes is row.gzip_bytes is None for row in rows)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("auto: trial ")]
    assert [line.split(": ", 2)[2] for line in lines] == [
        f"{row.params:,} parameters, over budget untrained: params {row.params} > 10" for row in rows], lines


def test_patience_counts_trials_since_the_last_gain_beyond_two_percent():
    from kstruct.auto.run import trials_without_gain

    assert trials_without_gain([]) is None
    assert trials_without_gain([(12.0, False), (11.0, False)]) is None  # nothing feasible yet: no count
    assert trials_without_gain([(12.0, False), (0.5, True), (13.0, False)]) == 1
    assert trials_without_gain([(0.5, True), (0.495, True), (0.6, True)]) == 2  # 1% lower is a tie, not a gain
    assert trials_without_gain([(0.5, True), (0.45, True), (0.6, True)]) == 1
    assert trials_without_gain([(0.5, True), (0.3, False)]) == 1  # lower but infeasible: no gain


def test_patience_stops_the_search_after_that_many_trials_without_a_gain(trained, capsys):
    """Scores are parameter ratios (exact): the search stops the first time a trial brings no gain."""
    from kstruct.auto.run import trials_without_gain

    model, train, validation = trained
    result = kstruct.optimize(
        model, "auto(params=1000000, max_accuracy_drop=1.0, trials=8, epochs=1, tuner='random', patience=1, seed=1)",
        train_data=train, validation_data=validation, target="float32", verbose=1,
    )
    rows = [(row["score"], row["status"] == "feasible") for row in result.trials]
    assert len(rows) < 8 and trials_without_gain(rows) == 1, result.trials
    assert all(trials_without_gain(rows[:end]) == 0 for end in range(1, len(rows)))  # it stopped at the first miss
    assert f"auto: stopped after {len(rows)} of 8 trials: the last 1 brought no feasible trial 2% better (patience=1)" in capsys.readouterr().out


def test_when_the_defaults_structure_misses_the_budget_the_first_trial_is_the_mildest_that_meets_it(trained, capsys):
    """Parameters are exact: the default `prune_channels(0.5)` keeps too many, and of the one-step changes
    whose untrained structure meets the limit, the first trial is the one that keeps the most (here
    dropping a block keeps more than the next channel ratio, 0.6, would)."""
    model, train, validation = trained
    limit = int(model.count_params() * 0.25)  # prune_channels(0.5) keeps 27%
    result = kstruct.optimize(
        model, f"auto(params={limit}, max_accuracy_drop=1.0, trials=1, epochs=1, tuner='random')",
        train_data=train, validation_data=validation, target="float32", verbose=1,
    )
    out = capsys.readouterr().out
    line = re.search(r"auto: first trial (\w+)=([0-9.]+): the defaults' structure misses the budget untrained "
                     r"\(params\), this one meets it", out)
    assert line, out
    assert "kstruct.factorize:" not in out  # the plans made to measure structures stay quiet
    [row] = result.trials
    assert row["status"] == "feasible" and row["params"] <= limit
    assert f"{line[1]}({line[2]}, " in row["strategy"]
    stronger = kstruct.optimize(model, "prune_channels(0.6, epochs=1)", train_data=train,
                                validation_data=validation, target="float32", verbose=0)
    assert stronger.report.stages[-1].params < row["params"]


def test_a_timeout_that_passes_before_the_first_trial_says_so(trained):
    model, train, validation = trained
    with pytest.raises(BudgetError) as caught:
        kstruct.optimize(
            model, "auto(params=1000000, trials=3, epochs=1, timeout=1e-9)",
            train_data=train, validation_data=validation, target="float32", verbose=0,
        )
    assert str(caught.value) == ("auto's timeout (1e-09 s) passed before any trial started (measuring the original "
                                 "model comes first); give it more time (timeout=...).")
    assert caught.value.result == []


def test_under_a_latency_budget_the_structure_is_timed_with_the_layers_ptq_keeps_in_float(trained, monkeypatch):
    """Timings fixed: a file with a float op takes 0.5 ms, an all-int8 one 1 ms, and conv1 is the layer faster
    in float. The first trial's guess keeps it in float; timed all int8 before training (as it was), the
    structure missed latency_ms=0.75 and the trial was refused untrained. The ranking is timed once per
    trial: the trained model has the structure's architecture."""
    import tflite_export
    from kstruct.auto import run as auto_run
    from kstruct.quantization import float_speed

    timed = []
    monkeypatch.setattr(float_speed, "_RANKINGS", {})
    monkeypatch.setattr(float_speed, "_timed_ranking", lambda model, data, target: timed.append(target) or [("conv1", 0.5)])
    monkeypatch.setattr(auto_run, "latency", lambda blob: 0.5 if tflite_export.analyze(blob).float_ops else 1.0)
    model, train, validation = trained
    result = kstruct.optimize(
        model, "auto(latency_ms=0.75, max_accuracy_drop=1.0, trials=1, epochs=1)",
        train_data=train, validation_data=validation, target="int8", verbose=0,
    )
    [row] = result.trials
    assert row["status"] == "feasible" and row["latency_ms"] == 0.5, row
    assert "ptq(float_layers=1, float_by='latency')" in result.strategy
    assert any("conv1" in names for _, names in tflite_export.analyze(result.tflite).float_ops)
    assert timed == ["int8"]


def test_training_settings_reach_compile_and_fit(trained):
    """`learning_rate`, `optimizer` and `batch_size` of a training step are the ones its fit uses."""
    from kstruct.engine.step import StepResult, TrainingStep

    seen = {}

    class Probe(TrainingStep):
        name = "probe_settings"

        def __init__(self, *, epochs=None, distill=False, **training):
            self.init_training(epochs, distill, training)

        def apply(self, model, context):
            context = self.training_context(context)
            copy = keras.models.clone_model(model)
            copy.set_weights(model.get_weights())
            history = context.fit(copy)
            seen.update(
                optimizer=type(copy.optimizer).__name__, rate=float(keras.ops.convert_to_numpy(copy.optimizer.learning_rate)),
                nesterov=getattr(copy.optimizer, "nesterov", None), steps=int(copy.optimizer.iterations.numpy()),
                epochs=len(history.history["loss"]),
            )
            return StepResult(model=model)

    kstruct.register_step("probe_settings", Probe, override=True)
    model, train, validation = trained
    kstruct.optimize(
        model, "probe_settings(epochs=2, optimizer='sgd', learning_rate=0.005, batch_size=16)",
        train_data=train, validation_data=validation, target="float32", verbose=0,
    )
    assert seen == {"optimizer": "SGD", "rate": pytest.approx(0.005), "nesterov": True, "steps": 2 * 15, "epochs": 2}
    kstruct.optimize(
        model, "probe_settings(epochs=1, batch_size=80, lr_schedule='cosine')",
        train_data=train, validation_data=validation, target="float32", verbose=0,
    )
    assert seen["optimizer"] == "Adam" and seen["steps"] == 3 and seen["rate"] < 1e-6  # decayed to 0 at its last step


def test_batch_size_needs_array_data(trained):
    import tensorflow as tf

    model, (x, y), validation = trained
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(StrategyError, match=r"`batch_size=16` needs \(x, y\) array training data"):
        kstruct.optimize(model, "prune_channels(0.5, batch_size=16)", train_data=dataset, validation_data=validation,
                         target="float32", verbose=0)


def _end(oracle, trial, score: float, *, near_miss: bool = False, feasible: bool = False) -> None:
    oracle.update_trial(trial.trial_id, {"score": score, "feasible": float(feasible), "near_miss": float(near_miss)})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_while_nothing_is_feasible_every_other_trial_retrains_the_closest_near_miss(tmp_path):
    import keras_tuner

    from kstruct.auto.run import NEAR_MISS_RETRIES, _BayesianOracle, _RetrainsNearMisses

    assert issubclass(_BayesianOracle, _RetrainsNearMisses)

    class Oracle(_RetrainsNearMisses, keras_tuner.oracles.RandomSearchOracle):
        """The rule on random proposals: the Gaussian process's fit (seconds per trial) adds nothing to it."""

    oracle = Oracle(objective=keras_tuner.Objective("score", "min"), max_trials=30, seed=1)
    oracle._set_project_dir(str(tmp_path), "auto")
    hp = keras_tuner.HyperParameters()
    hp.Float("prune_channels", 0.1, 0.9, default=0.5)  # continuous: a random draw never repeats a structure
    hp.Int("drop_blocks", 0, 2, default=0)
    hp.Choice("optimizer", ["adam", "adamw", "sgd"], default="adam")
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
    oracle.update_space(hp)

    def structure(trial):
        return {k: trial.hyperparameters.values[k] for k in ("prune_channels", "drop_blocks")}

    first = oracle.create_trial("tuner0")
    _end(oracle, first, 10.2, near_miss=True)  # within every cost limit, 0.2 points over the drop
    for score in (12.0, 10.1):  # over a cost limit: no near miss, however close its score
        _end(oracle, oracle.create_trial("tuner0"), score)
    retrained = []
    for index in range(3, 3 + 2 * (NEAR_MISS_RETRIES + 1)):
        trial = oracle.create_trial("tuner0")
        if index % 2 == 1:
            retrained.append(trial)
            _end(oracle, trial, 10.5, near_miss=True)  # still over the drop
        else:
            _end(oracle, trial, 13.0)
    # Every other trial, NEAR_MISS_RETRIES times, then the oracle's own proposal.
    assert [structure(t) == structure(first) for t in retrained] == [True] * NEAR_MISS_RETRIES + [False]
    training = [(t.hyperparameters.values["optimizer"], t.hyperparameters.values["learning_rate"])
                for t in [first, *retrained[:NEAR_MISS_RETRIES]]]
    assert len(set(training)) == len(training)  # each retraining draws its own settings

    # Once a trial is feasible, the near miss's slots go back to the oracle.
    _end(oracle, oracle.create_trial("tuner0"), 0.4, feasible=True)
    if len(oracle.trials) % 2 == 0:
        _end(oracle, oracle.create_trial("tuner0"), 13.0)
    assert len(oracle.trials) % 2 == 1 and oracle._near_miss_values() is None


def test_a_regression_model_gets_no_distill_trials():
    """Distillation needs class scores: on a regression model every `distill=true` trial failed."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(200, 4)).astype("float32")
    y = x[:, :1] * 0.5 + 1
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.fit(x, y, epochs=2, verbose=0)
    result = kstruct.optimize(
        model, "auto(params=100, max_accuracy_drop=1, trials=6, tuner='random', epochs=1)",
        train_data=(x[:160], y[:160]), validation_data=(x[160:], y[160:]), target="float32", verbose=0,
    )
    assert [row["status"] for row in result.trials if row["status"] == "failed"] == [], result.trials
    assert not any("distill" in row["strategy"] for row in result.trials), result.trials
