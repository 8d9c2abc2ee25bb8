"""The `factorize` step through the doors users use: kstruct.optimize, the grammar, the console script, `auto`'s space."""

import keras
import keras_tuner
import numpy as np
import pytest
import tflite_export
from ai_edge_litert.interpreter import Interpreter

import kstruct
from kstruct import StrategyError
from kstruct.auto.space import chain, searched_steps
from kstruct.engine.search_info import SpaceInfo
from kstruct.errors import FactorizationError
from tests.conftest import compiled
from tests.console import kstruct as kstruct_cli


def small_cnn() -> keras.Model:
    return compiled(keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ],
        name="small_cnn",
    ))


@pytest.fixture(scope="module")
def digits(small_mnist):
    (x, y), (xt, yt) = small_mnist
    shrink = lambda a: a[:, 2:26:2, 2:26:2]  # noqa: E731  28x28 -> 12x12, to stay fast
    return (shrink(x[:128]), y[:128]), (shrink(xt[:48]), yt[:48])


def test_factorize_step_shrinks_params_macs_and_the_file_and_notes_each_layer(digits):
    (x, y), (xt, yt) = digits
    model = small_cnn()
    result = kstruct.optimize(model, "factorize(0.5)", train_data=(x, y), validation_data=(xt, yt),
                              epochs=1, target="float32", verbose=0)
    original, factorized = result.report.stages
    assert factorized.stage == "factorize(0.5)"
    notes = factorized.notes
    assert set(notes["factorized"]) == {"conv1", "conv2", "hidden"} and set(notes["skipped"]) == {"out"}
    assert notes["params"] == [model.count_params(), factorized.params] and factorized.params < 0.6 * original.params
    assert notes["macs"][1] < notes["macs"][0]
    for name, note in notes["factorized"].items():
        assert note["params"][1] < note["params"][0] and note["macs"][1] < note["macs"][0], name
    # The per-layer figures add up to the model's: the layers left alone cost what they did.
    saved = sum(note["params"][0] - note["params"][1] for note in notes["factorized"].values())
    assert notes["params"][0] - notes["params"][1] == saved
    assert notes["factorized"]["hidden"] == {**notes["factorized"]["hidden"], "form": "svd", "rank": 16, "full_rank": 32}
    assert factorized.tflite_bytes < 0.6 * original.tflite_bytes
    assert result.model.get_layer("hidden_factor").units == 16 and result.model.get_layer("hidden").units == 32
    assert [layer.name for layer in model.layers] == ["conv1", "conv2", "flatten", "hidden", "out"]  # untouched
    assert factorized.tflite_accuracy == pytest.approx(factorized.keras_accuracy, abs=0.03)


def test_factorize_with_distill_learns_from_the_original_and_leaves_it_untouched(digits):
    (x, y), (xt, yt) = digits
    keras.utils.set_random_seed(0)
    model = compiled(keras.Sequential(
        [keras.Input((12, 12, 1)), keras.layers.Flatten(name="flatten"),
         keras.layers.Dense(32, activation="relu", name="hidden"), keras.layers.Dense(10, activation="softmax", name="out")],
        name="tiny_mlp",
    ))
    before = [w.copy() for w in model.get_weights()]
    result = kstruct.optimize(model, "factorize(0.5, distill=true)", train_data=(x, y), validation_data=(xt, yt),
                              epochs=1, target="float32", verbose=0)
    factorized = result.report.stages[1]
    assert factorized.stage == "factorize(0.5, distill=true)"
    history = factorized.notes["history"]
    assert history["distillation_loss"][0] > 0  # the original taught its factorized copy
    assert factorized.notes["factorized"]["hidden"]["rank"] == 16
    # The teacher (the model handed to optimize) neither trained nor changed; the result is the plain student.
    for kept, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(kept, now)
    assert [layer.name for layer in result.model.layers] == ["flatten", "hidden_factor", "hidden", "out"]


def test_strategy_grammar_round_trip_and_bad_arguments():
    strategy = kstruct.Strategy.parse("factorize(energy=0.9, layers='hidden', epochs=2, learning_rate=0.001) + qat")
    assert str(strategy) == "factorize(energy=0.9, layers='hidden', epochs=2, learning_rate=0.001) + qat"
    assert kstruct.Strategy.parse(str(strategy)) == strategy
    assert kstruct.Strategy([kstruct.Factorize(0.25, distill=True)]) == kstruct.Strategy.parse("factorize(0.25, distill=true)")
    with pytest.raises(StrategyError, match="Expected exactly one of `rank`"):
        kstruct.Strategy.parse("factorize")
    with pytest.raises(StrategyError, match=r"Expected `rank` in \(0, 1\]. Received: rank=1.5"):
        kstruct.Strategy.parse("factorize(1.5)")


def test_a_model_with_nothing_worth_factorizing_is_one_clear_error(digits):
    (x, y), (xt, yt) = digits
    model = compiled(keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax", name="out")]))
    with pytest.raises(FactorizationError, match=r"factorize\(0.5\) factorizes no layer of model .*out: gives a model output"):
        kstruct.optimize(model, "factorize(0.5)", train_data=(x, y), validation_data=(xt, yt), epochs=1,
                         target="float32", verbose=0)


def test_auto_finds_factorize_in_its_space_by_the_step_declaring_it():
    assert kstruct.Factorize in searched_steps()
    model = small_cnn()
    space = SpaceInfo(model=model, target="float32", integer_target=False, size_by_gzip=False, array_data=True, max_epochs=2)
    hp = keras_tuner.HyperParameters()
    assert kstruct.Factorize.search_space(hp, space) is None  # off by default: the default trial is the plain chain
    assert hp.get("factorize") == 0.0 and list(hp.values) == ["factorize"]
    hp.values["factorize"] = 0.25
    steps = [step for step in chain(hp, space) if isinstance(step, kstruct.Factorize)]
    assert len(steps) == 1 and steps[0].rank == 0.25 and steps[0].settings.learning_rate == hp.get("learning_rate")
    # A model where no layer gets cheaper factorized does not offer it.
    head_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="out")])
    head_space = SpaceInfo(head_only, "float32", False, False, True, 2)
    assert kstruct.Factorize.search_space(keras_tuner.HyperParameters(), head_space) is None


@pytest.mark.slow
def test_factorize_prune_qat_gives_an_integer_only_int8_file_that_agrees(digits):
    (x, y), (xt, yt) = digits
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    result = kstruct.optimize(model, "factorize(0.25) + prune(0.5) + qat", train_data=(x, y), validation_data=(xt, yt),
                              epochs=2, target="int8", verbose=0)
    assert [s.stage for s in result.report.stages] == ["original", "factorize(0.25)", "prune(0.5)", "qat"]
    final = result.report.stages[-1]
    interpreter = Interpreter(model_content=result.tflite)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert {d["dtype"] for d in interpreter.get_tensor_details()} <= {np.int8, np.int32}
    # The factor layers are in the file: three convolutions per Tucker-2 conv or two per split one, two FULLY_CONNECTED.
    operators = tflite_export.analyze(result.tflite, gpu_analyzer=False).op_counts
    assert operators.get("FULLY_CONNECTED", 0) == 3 and operators.get("CONV_2D", 0) >= 4, operators
    # The file computes what the QAT model computes (as for every step: see tests/pruning/test_channels_step.py),
    # within a few int8 output steps: narrow linear layers (a rank-8 bottleneck) cost `qat` alone up to 4 steps
    # on this model unfactorized, so the chain is held to that, not to the one step of wider models.
    keras_scores = result.model.predict(xt, verbose=0)
    int8_scores = tflite_export.predict(result.tflite, xt)
    assert final.max_abs_diff <= 4 / 256 + 1e-6
    top2 = np.sort(keras_scores, axis=1)[:, -2:]
    untied = top2[:, 1] - top2[:, 0] > 2 * np.abs(keras_scores - int8_scores).max()
    np.testing.assert_array_equal(keras_scores[untied].argmax(1), int8_scores[untied].argmax(1))
    assert final.agreement >= 1 - np.mean(~untied)


@pytest.mark.slow
def test_console_script_runs_factorize(digits, tmp_path):
    (x, y), _ = digits
    small_cnn().save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    done = kstruct_cli("optimize", str(tmp_path / "model.keras"), "--strategy", "factorize(0.5)",
                       "--data", str(tmp_path / "data.npz"), "--target", "float32", "--epochs", "1",
                       "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "factorize(0.5)" in done.stdout
    saved = keras.models.load_model(tmp_path / "out" / "model.keras")
    assert saved.get_layer("hidden_factor").units == 16
