"""Conv1D under QAT converts to an int8 CONV_2D with per-channel weights and reproduces the QAT model."""

import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from kstruct import pruning
from kstruct.quantization import QuantizeWrapper, quantize
from qat_helpers import assert_within_one_step, calibrate, interpreter, op_names, weight_tensors


def _text_model(vocabulary=50, length=16, classes=3):
    inputs = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocabulary, 8, name="embedding")(inputs)  # named: the warning names it
    x = keras.layers.Conv1D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _int8_conv(blob, channels):
    (conv,) = weight_tensors(blob, "CONV_2D")
    assert conv["dtype"] == np.int8
    assert len(conv["quantization_parameters"]["scales"]) == channels  # per output channel
    return conv


def test_pruned_text_model_trains_with_qat_to_an_int8_file_with_parity():
    # Embedding + Conv1D + GlobalMaxPooling1D + Dense, pruned to 50% by hand, then QAT.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (128, 16)).astype("int32")
    y = (x[:, 0] % 3).astype("int32")
    pruned = pruning.prune(_text_model(), pruning.ConstantSparsity(0.5, frequency=1))
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=1, batch_size=32, verbose=0)
    with pytest.warns(UserWarning, match=r"embedding \(Embedding: Embedding is not supported by int8 QAT\)"):
        qat = quantize(pruning.strip(pruned))
    qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)

    blob = tflite_export.convert(qat, "int8", representative_data=x)
    conv = _int8_conv(blob, 16)
    assert conv["values"].shape == (16, 1, 3, 8)
    assert np.mean(conv["values"] == 0) >= 0.45  # the pruned zeros survive QAT
    assert interpreter(blob).get_output_details()[0]["dtype"] == np.int8
    agreement = np.mean(tflite_export.predict(blob, x).argmax(-1) == qat.predict(x, verbose=0).argmax(-1))
    assert agreement >= 0.99


def test_conv1d_model_under_prune_and_qat_through_optimize_keeps_parity():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 16, 4)).astype("float32")
    y = (x[:, :, 0].mean(-1) > 0).astype("int32")
    inputs = keras.Input((16, 4))
    h = keras.layers.Conv1D(8, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalMaxPooling1D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    result = kstruct.optimize(model, "prune(0.5) + qat", train_data=(x, y), epochs=1, target="int8", verbose=0)

    qat = result.report.stages[-1]
    assert qat.agreement >= 0.99 and qat.notes["float_layers"] == {}
    _int8_conv(result.tflite, 8)


@pytest.mark.parametrize(
    "options",
    [dict(padding="valid"), dict(padding="same", strides=2), dict(padding="causal", dilation_rate=2)],
    ids=["valid", "same_strided", "causal_dilated"],
)
def test_float_conv1d_model_quantizes_to_an_int8_file_matching_its_qat_model(options):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((20, 4))
    x = keras.layers.Conv1D(8, 3, **options)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    x_data = np.random.default_rng(1).normal(size=(32, 20, 4)).astype("float32")
    qat = calibrate(quantize(keras.Model(inputs, outputs)), x_data)
    (wrapper,) = [layer for layer in qat.layers if isinstance(layer, QuantizeWrapper) and "conv1d" in layer.name]
    assert wrapper.batch_norm is not None and wrapper.activation is not None

    blob = tflite_export.convert(qat, "int8", representative_data=x_data)
    assert "CONV_2D" in op_names(blob) and "DEQUANTIZE" not in op_names(blob)
    assert_within_one_step(blob, qat, x_data)
