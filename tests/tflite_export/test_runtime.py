"""predict() and the quantization helpers, on ai_edge_litert."""

import numpy as np
import pytest

import tflite_export
from tflite_export import ExportError
from tflite_export.runtime import dequantize, quantize


def test_predict_matches_keras_for_float32(cnn_blob, trained_cnn, mnist):
    x = mnist[2][:7]
    np.testing.assert_allclose(tflite_export.predict(cnn_blob("float32"), x), trained_cnn.predict(x, verbose=0), atol=1e-5)


def test_predict_handles_a_static_batch_larger_than_one_and_a_ragged_tail(trained_cnn, mnist):
    blob = tflite_export.convert(trained_cnn, "float32", batch_size=4)
    x = mnist[2][:10]  # 4 + 4 + 2 (padded)
    np.testing.assert_allclose(tflite_export.predict(blob, x), trained_cnn.predict(x, verbose=0), atol=1e-5)


def test_predict_handles_a_dynamic_batch_file(trained_cnn, mnist):
    import tensorflow as tf

    blob = tf.lite.TFLiteConverter.from_keras_model(trained_cnn).convert()
    x = mnist[2][:6]
    np.testing.assert_allclose(tflite_export.predict(blob, x), trained_cnn.predict(x, verbose=0), atol=1e-5)


def test_int8_inputs_use_the_files_own_scale_and_zero_point(cnn_blob):
    detail = tflite_export.analyze(cnn_blob("int8")).inputs[0]
    scale, zero_point = detail.scale[0], detail.zero_point[0]
    litert_detail = {"dtype": np.int8, "quantization": (scale, zero_point)}
    x = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    q = quantize(x, litert_detail)
    np.testing.assert_array_equal(q, np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8))
    np.testing.assert_allclose(dequantize(q, litert_detail), x, atol=scale)


def test_quantize_leaves_float_tensors_alone():
    x = np.array([0.25], dtype=np.float32)
    assert quantize(x, {"dtype": np.float32, "quantization": (0.0, 0)}).dtype == np.float32


def test_predict_rejects_inputs_of_the_wrong_shape(cnn_blob):
    with pytest.raises(ExportError) as info:
        tflite_export.predict(cnn_blob("float32"), np.zeros((2, 32, 32, 3), np.float32))
    assert str(info.value) == "x has shape (2, 32, 32, 3); the model expects inputs of shape (None, 28, 28, 1)"


def test_bytes_that_are_not_tflite_are_rejected():
    with pytest.raises(ExportError, match="Expected a TFLite file \\(flatbuffer identifier 'TFL3'\\). Received: 12 bytes"):
        tflite_export.predict(b"not a model!", np.zeros((1, 8), np.float32))


def test_a_missing_path_is_rejected(tmp_path):
    with pytest.raises(ExportError, match="no such file"):
        tflite_export.predict(str(tmp_path / "missing.tflite"), np.zeros((1, 8), np.float32))


def test_predict_reads_a_path(tmp_path, cnn_blob, mnist):
    path = tmp_path / "m.tflite"
    path.write_bytes(cnn_blob("int8"))
    np.testing.assert_array_equal(tflite_export.predict(path, mnist[2][:3]), tflite_export.predict(cnn_blob("int8"), mnist[2][:3]))
