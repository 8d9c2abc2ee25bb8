"""The QAT wrappers for Conv1D (as CONV_2D), attention in float and float activations train on JAX and PyTorch."""

import keras
import numpy as np
import pytest

from kstruct.quantization import quantize
from tests.backends.conftest import BACKEND, off_tensorflow

pytestmark = pytest.mark.backends


@off_tensorflow
def test_qat_model_with_conv1d_attention_and_float_activations_trains_off_tensorflow():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 4))
    x = keras.layers.Conv1D(8, 3, padding="causal", dilation_rate=2)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.MultiHeadAttention(2, 4)(x, x)
    x = keras.layers.Dense(8, activation="elu")(keras.layers.Dense(8, activation="gelu")(x))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
    with pytest.warns(UserWarning):  # attention and elu run in float, with a warning naming them
        qat = quantize(keras.Model(inputs, outputs))
    qat.compile("adam", "sparse_categorical_crossentropy")
    data = np.random.default_rng(0).normal(size=(32, 16, 4)).astype("float32")
    before = [np.array(w) for w in qat.trainable_weights]
    history = qat.fit(data, (data[:, 0, 0] > 0).astype("int32"), epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    changed = [not np.array_equal(b, np.array(w)) for b, w in zip(before, qat.trainable_weights) if w.shape != ()]
    assert changed and all(changed)
