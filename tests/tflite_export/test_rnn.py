"""Recurrent models (LSTM, GRU, SimpleRNN, Bidirectional) convert for every target that can run them.

Keras 3 runs them as a WHILE loop; TF 2.21's int8 calibrator segfaults on it, and
the GPU delegate has no WHILE kernel. `convert` unrolls them for those targets.
"""

import json

import numpy as np
import pytest

import tflite_export
from tflite_export import CompatibilityError, ExportError
from tests.console import python_module

VOCAB, STEPS, UNITS = 50, 8, 8


def text_model(kind: str):
    import keras

    keras.utils.set_random_seed(0)
    recurrent = {
        "lstm": lambda: keras.layers.LSTM(UNITS),
        "gru": lambda: keras.layers.GRU(UNITS),
        "simple_rnn": lambda: keras.layers.SimpleRNN(UNITS),
        "bidirectional_gru": lambda: keras.layers.Bidirectional(keras.layers.GRU(UNITS)),
    }[kind]()
    return keras.Sequential(
        [
            keras.Input((STEPS,), dtype="int32"),
            keras.layers.Embedding(VOCAB, UNITS),
            recurrent,
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, VOCAB, (32, STEPS)).astype("int32")


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "bidirectional_gru"])
def test_int8_file_is_unrolled_integer_and_matches_keras(kind, tokens):
    model = text_model(kind)
    weights = [w.copy() for w in model.get_weights()]
    blob = tflite_export.convert(model, "int8", representative_data=tokens)

    analysis = tflite_export.analyze(blob)
    assert "WHILE" not in analysis.ops
    assert {"FULLY_CONNECTED", "TANH"} <= set(analysis.ops)
    assert [t.dtype for t in analysis.inputs] == ["int32"]  # token ids stay ids
    assert [t.dtype for t in analysis.outputs] == ["int8"]
    # Every activation is int8: no DEQUANTIZE -> SPLIT -> QUANTIZE island at the first step.
    floats = [name for name, dtype in analysis.tensors_not_int8_int32 if dtype == "float32"]
    assert floats == [] and set(analysis.dtype_counts) <= {"int8", "int32", "bool"}, analysis.dtype_counts
    expected = model.predict(tokens, verbose=0)
    np.testing.assert_allclose(tflite_export.predict(blob, tokens), expected, atol=0.02)
    # The user's model is untouched: still a loop, same weights.
    recurrent = model.layers[1]
    inner = getattr(recurrent, "forward_layer", recurrent)
    assert inner.unroll is False
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("target, activations", [("int16x8", "int16"), ("micro", "int8")])
def test_lstm_on_float_sequences_converts_for_int16x8_and_micro(target, activations):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS, 4)), keras.layers.LSTM(UNITS), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).random((32, STEPS, 4)).astype("float32")
    blob = tflite_export.convert(model, target, representative_data=x)
    analysis = tflite_export.analyze(blob)
    assert "WHILE" not in analysis.ops and "LOGISTIC" in analysis.ops
    assert max(analysis.dtype_counts, key=analysis.dtype_counts.get) == activations
    np.testing.assert_allclose(tflite_export.predict(blob, x), model.predict(x, verbose=0), atol=0.01)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_unrolled_first_step_is_integer_in_every_conversion(kind):
    """TF's MLIR quantizer left the first step's SPLIT in float in some runs (GRU: up to half); micro refused those."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS, 4)), getattr(keras.layers, kind)(UNITS), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((16, STEPS, 4)).astype("float32")
    for _ in range(5):
        analysis = tflite_export.analyze(tflite_export.convert(model, "micro", representative_data=x))
        assert "DEQUANTIZE" not in analysis.ops and analysis.tensors_not_int8_int32 == []


def test_float_targets_keep_the_loop_and_match_keras_exactly(tokens):
    model = text_model("lstm")
    blob = tflite_export.convert(model, "float32")
    assert "WHILE" in tflite_export.analyze(blob).ops
    np.testing.assert_allclose(tflite_export.predict(blob, tokens), model.predict(tokens, verbose=0), atol=1e-5)


def test_gpu_target_refuses_the_unrolled_lstm_naming_layer_and_working_targets():
    with pytest.raises(CompatibilityError) as caught:
        tflite_export.convert(text_model("lstm"), "gpu")
    message = str(caught.value)
    assert "UNPACK is not supported by the GPU delegate" in message
    assert "the model's recurrent layers ['lstm" in message
    assert "recurrent layers convert for target='float32', 'dynamic', 'float16', 'int8' or 'int16x8'" in message
    assert caught.value.ops == ("UNPACK",)


MASKED_INT8 = {
    # Embedding(mask_zero=True) before a recurrent layer: the converter's int8 quantizer has no SELECT_V2
    "embedding": (
        "Quantization not yet supported for op: 'SELECT_V2'. The model carries a Keras mask (from `embed`): a "
        "recurrent layer reading it keeps its state where the mask is 0, with SELECT_V2 (and CAST), which "
        "TensorFlow's integer quantizer does not quantize. Use target='dynamic' (int8 weights, float activations) "
        "or 'float16', or train without the mask (mask_zero=False: the model learns to ignore the padding)."
    ),
    # A Masking layer computes its mask with REDUCE_ANY, refused first; the message said mask_zero=False,
    # which a Masking layer does not have
    "masking": (
        "Quantization not yet supported for op: 'REDUCE_ANY'. The model carries a Keras mask from a Masking layer "
        "(`padding`), which computes it with REDUCE_ANY; a recurrent layer reading it keeps its state where the "
        "mask is 0, with SELECT_V2 (and CAST): TensorFlow's integer quantizer quantizes none of them. Use "
        "target='dynamic' (int8 weights, float activations) or 'float16', or train without the mask (drop the "
        "Masking layer: the model learns to ignore the padding)."
    ),
}


@pytest.mark.parametrize("mask", sorted(MASKED_INT8))
def test_a_masked_recurrent_model_is_refused_for_int8_naming_the_mask_and_the_targets_that_work(mask, tokens):
    import keras

    if mask == "embedding":
        head, data = [keras.Input((STEPS,), dtype="int32"), keras.layers.Embedding(VOCAB, UNITS, mask_zero=True,
                                                                                   name="embed")], tokens
    else:
        head = [keras.Input((STEPS, 3)), keras.layers.Masking(0.0, name="padding")]
        data = np.random.default_rng(0).random((16, STEPS, 3)).astype("float32")
    model = keras.Sequential([*head, keras.layers.SimpleRNN(UNITS), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(ExportError) as caught:
        tflite_export.convert(model, "int8", representative_data=data)
    assert str(caught.value) == "TFLite conversion for target='int8' failed: " + MASKED_INT8[mask]
    tflite_export.convert(model, "dynamic")  # the way out converts


@pytest.mark.slow
def test_the_rolled_lstm_segfault_in_calibration_is_an_error_not_a_dead_process(tokens):
    """The crash the unrolling avoids, reproduced through the isolation path: this process survives it."""
    import importlib

    import tensorflow as tf

    from tflite_export._isolate import run_isolated

    convert_module = importlib.import_module("tflite_export.convert")
    model = text_model("lstm")
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, STEPS), "int32")
    )
    samples = [[row[None]] for row in tokens]  # one array per model input, as convert builds them
    frozen = convert_module._freeze(concrete)
    try:
        blob = run_isolated(
            convert_module._convert_frozen, *frozen, "int8", "int8", samples, False, False, what="The converter"
        )
    except ExportError as error:  # TF 2.21: SIGSEGV in the calibrator
        assert str(error).startswith("The converter crashed (SIGSEGV, signal 11) in a child process")
    else:  # a TensorFlow that calibrates WHILE loops: then the file must be a real int8 file
        assert "WHILE" in tflite_export.analyze(blob).ops


@pytest.mark.slow
def test_optimize_prune_then_qat_to_int8_on_embedding_lstm_never_crashes(tmp_path):
    """In a process of its own (tests/tflite_export/rnn_optimize.py, forked by tests/console.py): the
    calibrator's segfault ends that process, not this one."""
    process = python_module("tests.tflite_export.rnn_optimize", "lstm", cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]  # -11 was the bug
    outcome = json.loads(process.stdout.strip().splitlines()[-1])
    assert "WHILE" not in outcome["ops"]
    assert outcome["output"] == "int8"
    assert outcome["agreement"] >= 0.9
    assert outcome["max_diff"] < 0.05
