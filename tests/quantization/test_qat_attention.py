"""MultiHeadAttention under QAT: left in float with a warning naming it; the model converts and measures."""

import keras
import numpy as np
import pytest

import kstruct
from kstruct.quantization import FloatPassthrough, quantize


def _sequences(n=96, length=8, width=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, length, width)).astype("float32")
    return x, (x[:, 0, 0] > 0).astype("int32")


def _compiled(inputs, x):
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _transformer_block():
    inputs = keras.Input((8, 16))
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(inputs, inputs)
    x = keras.layers.LayerNormalization(name="norm")(keras.layers.Add()([inputs, attended]))
    return _compiled(inputs, x)


def _attention_alone():
    inputs = keras.Input((8, 16))
    return _compiled(inputs, keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(inputs, inputs))


@pytest.mark.parametrize("build", [_transformer_block, _attention_alone], ids=["block", "alone"])
def test_attention_model_under_qat_converts_and_measures(build):
    keras.utils.set_random_seed(0)
    x, y = _sequences()
    warning = r"attention \(MultiHeadAttention: MultiHeadAttention is not supported by int8 QAT\)"
    with pytest.warns(UserWarning, match=warning):
        result = kstruct.optimize(build(), "qat", train_data=(x, y), epochs=1, target="int8", verbose=0)

    stage = result.report.stages[-1]
    assert "attention" in stage.notes["float_layers"]
    assert stage.tflite_bytes > 0 and stage.agreement >= 0.75  # attention runs in float: near, not exact
    assert stage.notes["int8_accuracy"] == pytest.approx(stage.tflite_accuracy)  # the file's, on the same data


def test_attention_in_float_gets_query_and_value_and_keeps_its_weights():
    # Cross-attention: the query and the value are different tensors.
    query, value = keras.Input((4, 8)), keras.Input((6, 8))
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(query, value)
    model = keras.Model([query, value], keras.layers.Flatten()(attended))
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(4, 4, 8)).astype("float32"), rng.normal(size=(4, 6, 8)).astype("float32")]
    with pytest.warns(UserWarning, match="attention"):
        qat = quantize(model)

    (wrapper,) = [layer for layer in qat.layers if isinstance(layer, FloatPassthrough)]
    assert wrapper.layer.name == "attention"
    qat(inputs, training=True)  # learns the output range
    np.testing.assert_allclose(qat.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=0.05)


def test_qat_model_with_attention_in_float_round_trips_through_a_keras_file(tmp_path):
    x, _ = _sequences(8)
    with pytest.warns(UserWarning, match="attention"):
        qat = quantize(_transformer_block())
    qat(x, training=True)
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
