"""analyze(): the structure read back from the flatbuffer."""

import json

import numpy as np

import tflite_export


def test_op_histogram_of_the_example_cnn(cnn_blob):
    a = tflite_export.analyze(cnn_blob("float32"))
    assert a.op_counts == {"CONV_2D": 2, "MAX_POOL_2D": 2, "RESHAPE": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1}
    assert sum(a.op_counts.values()) == len(a.ops)


def test_constant_bytes_cover_the_float_weights(cnn_blob, trained_cnn):
    a = tflite_export.analyze(cnn_blob("float32"))
    params = trained_cnn.count_params()
    assert params * 4 <= a.constant_bytes <= params * 4 + 1024
    assert a.size_bytes == len(cnn_blob("float32")) and a.gzip_bytes < a.size_bytes


def test_zero_weight_fraction_counts_kernel_zeros():
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), keras.layers.Dense(16)])
    kernel = model.layers[0].kernel.numpy()
    kernel[:, :16] = 0.0  # half of the first kernel
    model.layers[0].kernel.assign(kernel)
    a = tflite_export.analyze(tflite_export.convert(model, "float32"))
    assert a.weight_count == 64 * 32 + 32 * 16
    assert a.zero_weight_fraction == (64 * 16) / (64 * 32 + 32 * 16)


def test_signature_reports_quantization_of_int8_io(cnn_blob):
    a = tflite_export.analyze(cnn_blob("int8"))
    (inp,), (out,) = a.inputs, a.outputs
    assert inp.dtype == "int8" and inp.shape == [1, 28, 28, 1]
    assert len(inp.scale) == 1 and 0 < inp.scale[0] < 0.01
    assert out.shape == [1, 10]


def test_dynamic_batch_file_is_flagged(trained_cnn):
    import tensorflow as tf

    a = tflite_export.analyze(tf.lite.TFLiteConverter.from_keras_model(trained_cnn).convert())
    assert a.has_dynamic_shape_ops and "SHAPE" in a.ops
    assert a.inputs[0].shape[0] == -1
    assert not a.gpu_compatible


def test_to_json_round_trips_and_to_text_names_the_verdicts(cnn_blob):
    a = tflite_export.analyze(cnn_blob("gpu"))
    d = json.loads(a.to_json())
    assert d["op_counts"] == a.op_counts and d["gpu_compatible"] is True and d["uses_flex"] is False
    assert d["inputs"][0]["shape"] == [1, 28, 28, 1]
    text = a.to_text()
    assert "GPU: compatible" in text and "FULLY_CONNECTED x2" in text and "float16" in text


def test_gpu_analyzer_text_is_captured_not_printed(cnn_blob, capsys):
    a = tflite_export.analyze(cnn_blob("float32"))
    assert "GPU delegate" in a.gpu_analyzer_text
    assert capsys.readouterr().out == ""


def test_analyze_without_tensorflow_analyzer_still_reads_structure(cnn_blob):
    a = tflite_export.analyze(cnn_blob("float32"), gpu_analyzer=False)
    assert a.gpu_analyzer_text == "" and a.gpu_compatible and np.isfinite(a.zero_weight_fraction)


def test_gzip_size_is_level_9_gzip_and_skipped_on_request(cnn_blob):
    import gzip

    blob = cnn_blob("float32")
    assert tflite_export.analyze(blob).gzip_bytes == len(gzip.compress(blob, compresslevel=9, mtime=0))
    skipped = tflite_export.analyze(blob, gzip_size=False)  # what convert asks for: it only checks ops
    assert skipped.gzip_bytes is None
    assert "gzipped" not in skipped.to_text() and json.loads(skipped.to_json())["gzip_bytes"] is None
