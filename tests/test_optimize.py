import json

import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from kstruct import DataError, KstructError, OutputExistsError, Prune, UnsupportedModelError
from tests.conftest import compiled, tiny_cnn


@pytest.fixture(scope="module")
def trained(small_mnist):
    """A tiny CNN trained for one epoch, shared (read-only) by the tests of this module."""
    (x, y), _ = small_mnist
    model = compiled(tiny_cnn())
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def weights_before(trained):
    """`trained`'s weights before any test optimizes it."""
    return [np.array(w) for w in trained.get_weights()]


@pytest.fixture(scope="module")
def pruned_result(trained, weights_before, small_mnist):
    (x, y), (xt, yt) = small_mnist
    return kstruct.optimize(
        trained, "prune(0.75)", train_data=(x, y), validation_data=(xt, yt), epochs=2, target="int8", verbose=0
    )


def test_optimize_prunes_to_the_requested_sparsity_and_exports_full_int8(pruned_result):
    report = pruned_result.report
    assert [stage.stage for stage in report.stages] == ["original", "prune(0.75)"]
    original, pruned = report.stages
    assert original.sparsity == 0.0
    assert pruned.sparsity == pytest.approx(0.75, abs=0.01)
    assert pruned.nonzero_params < 0.35 * pruned.params
    assert pruned.tflite_gzip_bytes < 0.6 * original.tflite_gzip_bytes
    # Two epochs of fine-tuning recover what 75% pruning cost the tiny CNN.
    assert pruned.keras_accuracy >= original.keras_accuracy - 0.05
    assert abs(pruned.tflite_accuracy - pruned.keras_accuracy) <= 0.03
    assert pruned.agreement > 0.95
    assert pruned.latency_ms > 0
    analysis = tflite_export.analyze(pruned_result.tflite)
    assert [t.dtype for t in analysis.inputs] == ["int8"] and [t.dtype for t in analysis.outputs] == ["int8"]
    assert analysis.tensors_not_int8_int32 == []
    assert analysis.zero_weight_fraction == pytest.approx(0.75, abs=0.01)


def test_steps_per_execution_of_the_users_compile_carries_through_and_the_schedules_still_count_every_step(small_mnist):
    (x, y), (xt, yt) = small_mnist
    model = tiny_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=5)
    result = kstruct.optimize(model, "prune(0.75) + qat", train_data=(x, y), validation_data=(xt, yt), epochs=1, verbose=0)
    assert result.model.steps_per_execution == 5
    assert result.report.stages[1].sparsity == pytest.approx(0.75, abs=0.01)
    assert tflite_export.analyze(result.tflite).zero_weight_fraction == pytest.approx(0.75, abs=0.01)


def test_result_model_is_a_plain_keras_model_and_the_input_is_untouched(trained, weights_before, pruned_result):
    assert [type(layer).__name__ for layer in pruned_result.model.layers] == [
        type(layer).__name__ for layer in trained.layers
    ]
    after = trained.get_weights()
    assert len(after) == len(weights_before)
    for before, now in zip(weights_before, after):
        np.testing.assert_array_equal(now, before)


def test_save_writes_all_outputs_and_never_overwrites_silently(pruned_result, tmp_path):
    out = tmp_path / "out"
    pruned_result.save(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "layers.png", "model.keras", "model.tflite", "report.json", "report.md", "stages.png", "training.png"
    ]
    assert (out / "model.tflite").read_bytes() == pruned_result.tflite
    report = json.loads((out / "report.json").read_text())
    assert report["strategy"] == "prune(0.75)" and report["target"] == "int8"
    assert report["stages"][1]["sparsity"] == pytest.approx(0.75, abs=0.01)
    reloaded = keras.models.load_model(out / "model.keras")
    assert kstruct.pruning.sparsity(reloaded).overall == pytest.approx(0.75, abs=0.01)

    (out / "report.json").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        pruned_result.save(out)
    assert (out / "report.json").read_text() == "mine"
    pruned_result.save(out, overwrite=True)
    assert json.loads((out / "report.json").read_text())["strategy"] == "prune(0.75)"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folders left behind


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


@pytest.mark.parametrize("form", ["tf.data", "PyDataset"])
def test_optimize_accepts_datasets_and_an_uncompiled_model_with_a_loss(form, small_mnist):
    import tensorflow as tf

    (x, y), (xt, yt) = small_mnist
    x, y = x[:320], y[:320]
    if form == "tf.data":
        train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    else:
        train = _Batches(x, y, 32)
    result = kstruct.optimize(
        tiny_cnn(),
        [Prune(0.5, schedule="constant")],
        train_data=train,
        validation_data=(xt[:100], yt[:100]),
        epochs=1,
        target="float32",
        loss="sparse_categorical_crossentropy",
        verbose=0,
    )
    assert result.report.settings["steps_per_epoch"] == 10
    assert result.report.final.sparsity == pytest.approx(0.5, abs=0.01)
    assert tflite_export.analyze(result.tflite).inputs[0].dtype == "float32"


def test_optimize_holds_out_validation_data_when_none_is_given(trained, small_mnist):
    (x, y), _ = small_mnist
    result = kstruct.optimize(trained, "prune(0.3)", train_data=(x[:400], y[:400]), epochs=1, target="float32", verbose=0)
    assert result.report.settings["validation"] == "random 10% of train_data, seed 0 (no validation_data given)"
    assert result.report.settings["validation_images"] == 40


def test_uncompiled_model_without_a_loss_is_refused_before_any_work(small_mnist):
    (x, y), _ = small_mnist
    with pytest.raises(KstructError) as err:
        kstruct.optimize(tiny_cnn(), "prune(0.5)", train_data=(x, y))
    assert str(err.value) == (
        "Model `tiny_cnn` is not compiled and no `loss` was given. Compile it first "
        "(model.compile(optimizer=..., loss=...)) or pass loss=... (CLI: --loss)."
    )


def test_data_of_the_wrong_shape_names_both_shapes(trained):
    x = np.zeros((10, 28, 28), "float32")
    with pytest.raises(DataError) as err:
        kstruct.optimize(trained, "prune(0.5)", train_data=(x, np.zeros(10)))
    assert str(err.value) == (
        "`train_data` inputs have shape (None, 28, 28), but model `tiny_cnn` expects (None, 28, 28, 1). "
        "Reshape the data to match."
    )


def test_unknown_target_lists_the_valid_ones(trained, small_mnist):
    (x, y), _ = small_mnist
    with pytest.raises(KstructError, match=r"Expected `target` to be one of \('float32', .*'int8'.*\). Received: target='int9'"):
        kstruct.optimize(trained, "prune(0.5)", train_data=(x, y), target="int9")


def test_existing_output_directory_is_refused_before_training(trained, small_mnist, tmp_path):
    (x, y), _ = small_mnist
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"already exists; pass overwrite=True to replace it"):
        kstruct.optimize(trained, "prune(0.5)", train_data=(x, y), output_dir=tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_subclassed_model_is_refused(small_mnist):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(10)

        def call(self, x):
            return self.d(keras.ops.reshape(x, (-1, 784)))

    (x, y), _ = small_mnist
    with pytest.raises(UnsupportedModelError, match="kstruct.optimize supports Sequential and functional"):
        kstruct.optimize(Net(), "prune(0.5)", train_data=(x, y), loss="mse")


def test_optimize_exports_a_static_gpu_file_and_reports_verify_and_benchmark_figures(trained, small_mnist):
    (x, y), (xt, yt) = small_mnist
    result = kstruct.optimize(
        trained, "prune(0.5)", train_data=(x[:320], y[:320]), validation_data=(xt[:100], yt[:100]),
        epochs=1, target="gpu", verbose=0,
    )
    analysis = tflite_export.analyze(result.tflite)
    assert not analysis.has_dynamic_shape_ops and analysis.gpu_compatible
    assert analysis.inputs[0].shape == [1, 28, 28, 1]
    final = result.report.final
    assert final.agreement == 1.0 and final.max_abs_diff < 1e-2
    assert final.latency_p90_ms >= final.latency_ms > 0
