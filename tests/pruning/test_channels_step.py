"""The prune_channels and drop_blocks steps through the doors users use: kstruct.optimize and the console script."""

import keras
import numpy as np
import pytest
import tflite_export
from ai_edge_litert.interpreter import Interpreter

import kstruct
from kstruct import StrategyError
from kstruct.errors import PruningError
from tests.console import kstruct as kstruct_cli


def small_resnet(width=16) -> keras.Model:
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="stem")(inputs)
    for i in range(2):
        y = keras.layers.Conv2D(width, 3, padding="same", name=f"b{i}_conv1")(x)
        y = keras.layers.BatchNormalization(name=f"b{i}_bn")(y)
        y = keras.layers.ReLU(name=f"b{i}_relu")(y)
        y = keras.layers.Conv2D(width, 3, padding="same", name=f"b{i}_conv2")(y)
        x = keras.layers.Add(name=f"b{i}_add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="out")(x), name="small_resnet")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def digits(small_mnist):
    (x, y), (xt, yt) = small_mnist
    shrink = lambda a: a[:, 2:26:2, 2:26:2]  # noqa: E731  28x28 -> 12x12, to stay fast
    return (shrink(x[:96]), y[:96]), (shrink(xt[:48]), yt[:48])


def _conv_filters(blob: bytes) -> list[int]:
    """Output channels of each CONV_2D weight tensor in a TFLite file (read back with LiteRT)."""
    interpreter = Interpreter(model_content=blob)
    return sorted(
        d["shape"][0] for d in interpreter.get_tensor_details() if len(d["shape"]) == 4 and d["shape"][1] == 3
    )


def test_prune_channels_and_drop_blocks_steps_shrink_params_macs_and_the_file(digits):
    (x, y), (xt, yt) = digits
    model = small_resnet()
    result = kstruct.optimize(
        model, "prune_channels(0.5) + drop_blocks(1)", train_data=(x, y), validation_data=(xt, yt),
        epochs=1, target="float32", verbose=0,
    )
    original, pruned, dropped = result.report.stages
    assert [s.stage for s in result.report.stages] == ["original", "prune_channels(0.5)", "drop_blocks(1)"]
    assert original.params > 2 * pruned.params > 2 * dropped.params or dropped.notes["dropped"] == ["hidden"]
    assert pruned.tflite_bytes < 0.5 * original.tflite_bytes
    assert pruned.notes["params"] == [model.count_params(), pruned.params]
    assert pruned.notes["macs"][1] < 0.3 * pruned.notes["macs"][0]
    assert pruned.notes["widths"] == {"stem": "16->8", "b0_conv1": "16->8", "b0_conv2": "16->8", "b1_conv1": "16->8",
                                      "b1_conv2": "16->8", "hidden": "16->8"}
    # Candidates: the two residual blocks and the head's shape-preserving Dense; the lowest loss rise goes.
    scores = dropped.notes["scores"]
    assert set(scores) == {"b0_add", "b1_add", "hidden"} and dropped.notes["dropped"] == [min(scores, key=scores.get)]
    assert dropped.params < pruned.params
    # Read back from the file: stem + the two convs of each block left.
    assert _conv_filters(result.tflite) == [8] * (3 if dropped.notes["dropped"] != ["hidden"] else 5)
    assert result.model.get_layer("stem").filters == 8
    assert model.get_layer("stem").filters == 16  # the user's model is untouched
    assert pruned.tflite_accuracy == pytest.approx(pruned.keras_accuracy, abs=0.03)


@pytest.mark.slow
def test_prune_channels_then_qat_gives_an_integer_only_int8_file_that_agrees(digits):
    (x, y), (xt, yt) = digits
    model = small_resnet()
    model.fit(x, y, epochs=20, batch_size=16, verbose=0)
    result = kstruct.optimize(
        model, "prune_channels(0.5) + qat", train_data=(x, y), validation_data=(xt, yt),
        epochs=2, target="int8", verbose=0,
    )
    final = result.report.stages[-1]
    interpreter = Interpreter(model_content=result.tflite)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert {d["dtype"] for d in interpreter.get_tensor_details()} <= {np.int8, np.int32}
    # The file computes what the QAT model computes: outputs within one int8 step (1/256 of the
    # softmax), and so the same top-1 class wherever the QAT model's two best scores are more than two
    # such steps apart (closer ones may swap or tie, and Keras and LiteRT break ties differently).
    keras_scores = result.model.predict(xt, verbose=0)
    int8_scores = tflite_export.predict(result.tflite, xt)
    assert final.max_abs_diff <= 1 / 256 + 1e-6
    top2 = np.sort(keras_scores, axis=1)[:, -2:]
    untied = top2[:, 1] - top2[:, 0] > 2 * np.abs(keras_scores - int8_scores).max()
    np.testing.assert_array_equal(keras_scores[untied].argmax(1), int8_scores[untied].argmax(1))
    assert final.agreement >= 1 - np.mean(~untied)


def test_strategy_grammar_and_bad_arguments():
    strategy = kstruct.Strategy.parse("prune_channels(0.5, criterion='bn', round_to=4) + drop_blocks(2) + prune(0.5)")
    assert str(strategy) == "prune_channels(0.5, criterion='bn', round_to=4) + drop_blocks(2) + prune(0.5)"
    assert kstruct.Strategy.parse(str(strategy)) == strategy
    with pytest.raises(StrategyError, match=r"Expected `ratio` \(the fraction of channels to remove\) in \[0, 1\)\. "
                                            r"Received: ratio=1.5"):
        kstruct.Strategy.parse("prune_channels(1.5)")
    with pytest.raises(StrategyError, match=r"Expected `criterion` to be one of \('norm', 'loss'\)"):
        kstruct.Strategy.parse("drop_blocks(1, criterion='l2')")


def test_drop_blocks_asking_for_too_many_is_one_clear_error(digits):
    (x, y), (xt, yt) = digits
    with pytest.raises(PruningError, match=r"drop_blocks\(4\): model `small_resnet` has 3 removable "
                                           r"block\(s\) \(b0_add, b1_add, hidden\); ask for at most 3\."):
        kstruct.optimize(small_resnet(), "drop_blocks(4)", train_data=(x, y), validation_data=(xt, yt),
                         epochs=1, target="float32", verbose=0)


@pytest.mark.slow
def test_console_script_runs_prune_channels(digits, tmp_path):
    (x, y), _ = digits
    model = small_resnet()
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    done = kstruct_cli("optimize", str(tmp_path / "model.keras"), "--strategy", "prune_channels(0.5)",
                       "--data", str(tmp_path / "data.npz"), "--target", "float32", "--epochs", "1",
                       "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "prune_channels(0.5)" in done.stdout
