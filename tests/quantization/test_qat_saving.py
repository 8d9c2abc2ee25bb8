"""QAT models save to `.keras`, load back identical, and resume training."""

import keras
import numpy as np
import pytest

from kstruct.quantization import FakeQuant, quantization_report, quantize
from qat_helpers import calibrate


def _residual_qat():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    y = keras.layers.SeparableConv2D(4, 3, padding="same", activation="hard_silu")(x)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.LayerNormalization()(x)  # left in float
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.warns(UserWarning, match="layer_normalization"):
        return quantize(keras.Model(inputs, outputs))


def test_qat_model_round_trips_through_a_keras_file(tmp_path):
    qat = _residual_qat()
    x = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    calibrate(qat, x)
    path = tmp_path / "qat.keras"
    qat.save(path)

    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    assert str(quantization_report(loaded)) == str(quantization_report(qat))
    for original, reloaded in zip(qat.weights, loaded.weights):
        np.testing.assert_array_equal(original.numpy(), reloaded.numpy())


def test_qat_training_resumes_from_a_saved_model(float_cnn, digits, tmp_path):
    x_train, y_train, _, _ = digits
    qat = quantize(float_cnn)
    qat.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0)
    path = tmp_path / "qat.keras"
    qat.save(path)

    loaded = keras.saving.load_model(path)
    assert int(loaded.optimizer.iterations.numpy()) == int(qat.optimizer.iterations.numpy()) == 4
    ranges = [layer for layer in loaded.layers if isinstance(layer, FakeQuant)]
    assert ranges and all(float(layer.observed.numpy()) == 1.0 for layer in ranges)

    before = [w.numpy().copy() for w in loaded.trainable_weights]
    history = loaded.fit(x_train[256:512], y_train[256:512], epochs=1, batch_size=64, verbose=0)
    assert int(loaded.optimizer.iterations.numpy()) == 8
    assert np.isfinite(history.history["loss"][-1])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, loaded.trainable_weights))
