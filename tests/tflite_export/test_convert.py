"""convert(): what each target's file contains, read back from the flatbuffer."""

import os
import warnings

import numpy as np
import pytest

import tflite_export
from tflite_export import ExportError




def make_model(*layers, input_shape=(8,)):
    import keras

    return keras.Sequential([keras.Input(input_shape), *layers])


def test_every_target_converts_and_runs_on_litert(cnn_blob, mnist):
    _, _, x_test, _ = mnist
    for target in tflite_export.TARGETS:
        out = tflite_export.predict(cnn_blob(target), x_test[:5])
        assert out.shape == (5, 10), target
        assert np.all(np.isfinite(out)), target
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=0.05, err_msg=target)


def test_no_target_emits_flex_ops(cnn_blob):
    for target in tflite_export.TARGETS:
        analysis = tflite_export.analyze(cnn_blob(target))
        assert not analysis.uses_flex and not analysis.custom_ops, target


def test_float32_file_is_float_with_static_batch_one(cnn_blob):
    a = tflite_export.analyze(cnn_blob("float32"))
    assert set(a.dtype_counts) <= {"float32", "int32"}
    assert a.inputs[0].shape == [1, 28, 28, 1]
    assert a.outputs[0].shape == [1, 10]
    assert not a.has_dynamic_shape_ops
    assert "FULLY_CONNECTED" in a.ops and "BATCH_MATMUL" not in a.ops


def test_int8_file_is_full_integer_with_int32_biases(cnn_blob):
    a = tflite_export.analyze(cnn_blob("int8"))
    assert a.tensors_not_int8_int32 == []
    assert a.inputs[0].dtype == a.outputs[0].dtype == "int8"
    assert a.inputs[0].quantized and a.outputs[0].quantized
    assert a.dtype_counts["int32"] >= 4  # a bias per conv/dense layer


def test_int8_target_accepts_uint8_io(trained_cnn, calibration):
    a = tflite_export.analyze(tflite_export.convert(trained_cnn, "int8", calibration, io_dtype="uint8"))
    assert a.inputs[0].dtype == a.outputs[0].dtype == "uint8"


def test_float16_file_stores_weights_as_float16(cnn_blob):
    a = tflite_export.analyze(cnn_blob("float16"))
    assert a.dtype_counts["float16"] >= 4
    assert a.inputs[0].dtype == "float32"
    assert "DEQUANTIZE" in a.ops
    assert len(cnn_blob("float16")) < 0.6 * len(cnn_blob("float32"))


def test_dynamic_file_has_int8_weights_and_float_io(cnn_blob):
    a = tflite_export.analyze(cnn_blob("dynamic"))
    assert a.dtype_counts.get("int8", 0) >= 1
    assert a.inputs[0].dtype == a.outputs[0].dtype == "float32"
    assert len(cnn_blob("dynamic")) < 0.4 * len(cnn_blob("float32"))


def test_int16x8_file_has_int16_activations(cnn_blob):
    a = tflite_export.analyze(cnn_blob("int16x8"))
    assert a.dtype_counts["int16"] >= 5
    assert a.dtype_counts["int8"] >= 4


def test_gpu_file_has_static_shapes_and_no_shape_ops(cnn_blob):
    a = tflite_export.analyze(cnn_blob("gpu"))
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(a.ops)
    assert not a.has_dynamic_shape_ops and a.dynamic_tensors == []
    assert a.gpu_compatible, a.gpu_problems
    assert a.dtype_counts["float16"] >= 4


def test_edgetpu_file_defaults_to_uint8_io_and_int8_inside(cnn_blob):
    a = tflite_export.analyze(cnn_blob("edgetpu"))
    assert a.inputs[0].dtype == "uint8" and a.inputs[0].shape[0] == 1
    assert {dtype for _, dtype in a.tensors_not_int8_int32} == {"uint8"}


def test_batch_size_sets_the_static_batch(trained_cnn):
    a = tflite_export.analyze(tflite_export.convert(trained_cnn, "float32", batch_size=4))
    assert a.inputs[0].shape == [4, 28, 28, 1]


def test_sparse_weights_shrinks_a_pruned_model():
    import keras

    keras.utils.set_random_seed(2)
    model = make_model(keras.layers.Dense(256), keras.layers.Dense(10), input_shape=(256,))
    kernel = model.layers[0].kernel.numpy()
    kernel[np.random.default_rng(0).random(kernel.shape) < 0.8] = 0.0
    model.layers[0].kernel.assign(kernel)
    dense = tflite_export.convert(model, "float32")
    sparse = tflite_export.convert(model, "float32", sparse_weights=True)
    a = tflite_export.analyze(sparse)
    assert a.sparse_tensors >= 1
    assert len(sparse) < 0.5 * len(dense)
    assert a.zero_weight_fraction == pytest.approx(tflite_export.analyze(dense).zero_weight_fraction, abs=0.01)
    x = np.random.default_rng(1).random((3, 256), dtype=np.float32)
    np.testing.assert_allclose(tflite_export.predict(sparse, x), model.predict(x, verbose=0), atol=1e-4)


def test_unknown_target_is_rejected_with_valid_names(tiny_dense):
    with pytest.raises(ExportError, match=r"Expected `target` to be one of \('float32', .*'int4-weights'\). Received: target='foo'"):
        tflite_export.convert(tiny_dense, "foo")


@pytest.mark.parametrize("target", ["int8", "int16x8", "edgetpu", "micro"])
def test_integer_targets_without_data_say_what_to_pass(tiny_dense, target):
    with pytest.raises(ExportError, match=f"target='{target}' quantizes activations .* pass representative_data="):
        tflite_export.convert(tiny_dense, target)


def test_a_model_that_takes_strings_is_refused_for_a_calibrated_target_naming_the_way_out():
    """It crashed in numpy (`byte indices must be integers`) while cutting calibration samples."""
    import keras

    words = keras.Input((1,), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["good", "bad"])(words)
    model = keras.Model(words, keras.layers.Dense(1)(keras.layers.Embedding(3, 4)(ids)))
    with pytest.raises(ExportError) as info:
        tflite_export.convert(model, "int8", representative_data=np.array([[b"good"], [b"bad"]], dtype=object))
    assert str(info.value) == (
        "target='int8' calibrates the model on its inputs, but input `words` takes strings (a TextVectorization or "
        "StringLookup inside the model), which have no integer form. Keep the text preprocessing outside the model "
        "(map it over the data, as Keras's guides do for TFLite) and convert the model that takes its token ids, or "
        "use target='float32' with allow_flex=True."
    )


def test_misshapen_representative_data_names_both_shapes(trained_cnn):
    bad = np.zeros((10, 32, 32, 3), dtype=np.float32)
    with pytest.raises(ExportError) as info:
        tflite_export.convert(trained_cnn, "int8", bad)
    assert str(info.value) == (
        "representative_data has shape (10, 32, 32, 3); the model expects inputs of shape (None, 28, 28, 1)"
    )


def test_representative_data_may_be_an_iterable_of_batches(tiny_dense):
    batches = (np.random.default_rng(i).random((4, 8), dtype=np.float32) for i in range(3))
    a = tflite_export.analyze(tflite_export.convert(tiny_dense, "int8", batches))
    assert a.inputs[0].dtype == "int8"


def test_io_dtype_outside_the_target_is_rejected(tiny_dense):
    with pytest.raises(ExportError, match=r"Expected `io_dtype` to be one of \('int8', 'uint8'\) for target='int8'. Received: io_dtype='float32'"):
        tflite_export.convert(tiny_dense, "int8", np.zeros((2, 8), np.float32), io_dtype="float32")


def test_edgetpu_needs_batch_one(tiny_dense):
    with pytest.raises(ExportError, match=r"Expected `batch_size` to be 1 for target='edgetpu'. Received: batch_size=2"):
        tflite_export.convert(tiny_dense, "edgetpu", np.zeros((2, 8), np.float32), batch_size=2)


def _cumprod_model():
    import keras

    return make_model(keras.layers.Dense(4), keras.layers.Lambda(lambda x: keras.ops.cumprod(x, axis=1)))


def test_ops_needing_flex_are_refused_by_name():
    with pytest.raises(ExportError) as info:
        tflite_export.convert(_cumprod_model(), "float32")
    message = str(info.value)
    assert "Cumprod" in message and "allow_flex=True" in message and "SELECT_TF_OPS" in message


def test_allow_flex_emits_the_flex_op():
    a = tflite_export.analyze(tflite_export.convert(_cumprod_model(), "float32", allow_flex=True))
    assert a.uses_flex and "FlexCumprod" in a.custom_ops


def test_convert_accepts_a_keras_file(tmp_path, tiny_dense):
    path = tmp_path / "m.keras"
    tiny_dense.save(path)
    x = np.random.default_rng(0).random((3, 8), dtype=np.float32)
    blob = tflite_export.convert(str(path), "float32")
    np.testing.assert_allclose(tflite_export.predict(blob, x), tiny_dense.predict(x, verbose=0), atol=1e-5)


def test_missing_keras_file_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match=r"Received: model='.*nope.keras' \(no such file\)"):
        tflite_export.convert(str(tmp_path / "nope.keras"), "float32")


def test_non_model_is_rejected():
    with pytest.raises(ExportError, match="Expected `model` to be a keras.Model or a path to a .keras file. Received: model of type list"):
        tflite_export.convert([1, 2], "float32")


def test_float_targets_warn_nothing_from_tflite_export(tiny_dense):
    package = os.path.dirname(tflite_export.__file__)
    for target in ("float32", "float16"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tflite_export.convert(tiny_dense, target)
        ours = [
            str(w.message) for w in caught
            if w.filename.startswith(package) or w.category.__module__.startswith("tflite_export")
        ]
        assert ours == [], (target, ours)


def test_other_backends_refuse_a_custom_layer_the_tensorflow_child_cannot_import(monkeypatch):
    # Off TensorFlow, convert() loads the model in a child process (tests/backends runs that path).
    import keras

    @keras.saving.register_keras_serializable(package="convert_test")
    class Scale(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    Scale.__module__ = "__main__"  # as if defined in the user's script
    model = keras.Sequential([keras.Input((4,)), Scale(), keras.layers.Dense(2)])
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ExportError) as info:
        tflite_export.convert(model, "float32")
    assert str(info.value) == (
        "The model uses the custom class 'convert_test>Scale', defined in __main__; converting a model on the 'jax' "
        "backend loads it in a TensorFlow child process, which cannot import your script. Move the class into an "
        "importable module (keep @keras.saving.register_keras_serializable)"
    )
