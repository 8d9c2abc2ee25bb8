"""Mixed-precision models through `kstruct.optimize` and the console script (issue 20, item 3).

Training steps run under the model's own policy (its layers stay mixed_float16, with Keras's loss
scaling), QAT trains in float32 (it simulates the int8 file), and every file is converted from the
model's float32 twin. The global policy is the process's: each test that changes it restores it.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import kstruct
import tflite_export
from tests.console import kstruct as kstruct_script
from tests.tflite_export.test_precision import global_policy, mixed_cnn


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, size=(64, 8, 8, 3)).astype("float32")
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) > 0.5).astype("int64") + 2 * (x[:, 4:, 4:, 1].mean(axis=(1, 2)) > 0.5)
    return x, y


def compiled(model: keras.Model) -> keras.Model:
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def layer_policies(model: keras.Model) -> dict[str, str]:
    return {layer.name: layer.dtype_policy.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)}


def optimize(model, strategy: str, data, target: str):
    x, y = data
    return kstruct.optimize(model, strategy, train_data=(x, y), validation_data=(x[:16], y[:16]), epochs=1,
                            batch_size=16, target=target, verbose=0)


def test_ptq_int8_file_of_a_mixed_float16_model_runs_and_agrees_with_it(data):
    x, _ = data
    model = compiled(mixed_cnn())
    result = optimize(model, "ptq", data, "int8")  # was: "needs TensorFlow ops ... Conv2D, MaxPool" (Flex)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert layer_policies(result.model) == {"conv": "mixed_float16", "gap": "mixed_float16",
                                            "hidden": "mixed_float16", "out": "float32"}
    analysis = tflite_export.analyze(result.tflite)
    assert [t.dtype for t in analysis.inputs] == ["int8"] and not analysis.custom_ops
    difference = np.abs(tflite_export.predict(result.tflite, x) - np.asarray(model.predict(x, verbose=0))).max()
    assert difference <= 3 / 256, difference


def test_pruned_mixed_float16_model_keeps_its_policy_and_loss_scaling_and_its_float16_file_agrees(data):
    x, _ = data
    target = "float16"
    result = optimize(compiled(mixed_cnn()), "prune(0.5)", data, target)
    assert layer_policies(result.model)["conv"] == layer_policies(result.model)["hidden"] == "mixed_float16"
    assert result.model.dtype_policy.name == "mixed_float16"
    assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    analysis = tflite_export.analyze(result.tflite)
    assert (analysis.dtype_counts.get("float16", 0) > 0) == (target == "float16")  # float16 weights, as usual
    assert analysis.zero_weight_fraction == pytest.approx(0.5, abs=0.02)
    expected = np.asarray(result.model.predict(x, verbose=0))
    assert np.abs(tflite_export.predict(result.tflite, x) - expected).max() <= 3e-3  # float16 precision


def test_prune_qat_under_a_global_mixed_policy_trains_and_leaves_the_policy_as_it_was(data):
    x, _ = data
    with global_policy("mixed_float16"):  # how people train on GPUs: the policy stays set
        model = compiled(mixed_cnn())
        result = optimize(model, "prune(0.5) + qat", data, "int8")
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    # QAT simulates the int8 file, in float32 whatever the policy (TF's fake-quant takes float32 only).
    assert set(layer_policies(result.model).values()) == {"float32"}
    difference = np.abs(tflite_export.predict(result.tflite, x) - np.asarray(result.model.predict(x, verbose=0))).max()
    assert difference <= 2 / 256, difference


def test_each_training_step_keeps_the_mixed_policy(data):
    x, _ = data
    model = compiled(mixed_cnn())
    # One chain, so a step that lost the policy would leave every later one without it.
    result = optimize(model, "prune_channels(0.5) + cluster(8) + distill", data, "float32")
    assert layer_policies(result.model) == {"conv": "mixed_float16", "gap": "mixed_float16",
                                            "hidden": "mixed_float16", "out": "float32"}
    assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert result.model.count_params() < 0.7 * model.count_params()  # the channels went
    expected = np.asarray(result.model.predict(x, verbose=0))
    assert np.abs(tflite_export.predict(result.tflite, x) - expected).max() <= 3e-3


def test_mixed_bfloat16_model_optimizes_for_float32(data):
    x, _ = data
    result = optimize(compiled(mixed_cnn("mixed_bfloat16")), "prune(0.5)", data, "float32")
    assert layer_policies(result.model)["conv"] == "mixed_bfloat16"
    expected = np.asarray(tflite_export.float32_twin(result.model).predict(x, verbose=0))
    np.testing.assert_allclose(tflite_export.predict(result.tflite, x), expected, atol=1e-5)


def test_console_script_optimizes_a_saved_mixed_float16_model(data, tmp_path):
    x, y = data
    compiled(mixed_cnn()).save(tmp_path / "mixed.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    done = kstruct_script(
        "optimize", tmp_path / "mixed.keras", "--strategy", "ptq", "--data", tmp_path / "data.npz",
        "--target", "int8", "--out", tmp_path / "out", "--epochs", "1",
    )
    assert done.returncode == 0, done.stderr
    analysis = tflite_export.analyze((tmp_path / "out" / "model.tflite").read_bytes())
    assert [t.dtype for t in analysis.inputs] == ["int8"] and not analysis.custom_ops
    saved = keras.saving.load_model(tmp_path / "out" / "model.keras")
    assert saved.get_layer("conv").dtype_policy.name == "mixed_float16"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["strategy"] == "ptq"
