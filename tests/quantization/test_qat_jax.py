"""The QAT wrappers added here (Conv1D as CONV_2D, attention in float, float activations) train on JAX."""

from qat_helpers import fresh_python

CODE = """
import warnings
warnings.simplefilter("ignore")
import keras, numpy as np
from kstruct.quantization import quantize
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)
inputs = keras.Input((16, 4))
x = keras.layers.Conv1D(8, 3, padding="causal", dilation_rate=2)(inputs)
x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
x = keras.layers.MultiHeadAttention(2, 4)(x, x)
x = keras.layers.Dense(8, activation="elu")(keras.layers.Dense(8, activation="gelu")(x))
outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
qat = quantize(keras.Model(inputs, outputs))
qat.compile("adam", "sparse_categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(32, 16, 4)).astype("float32")
before = [w.numpy().copy() for w in qat.trainable_weights]
loss = qat.fit(x, (x[:, 0, 0] > 0).astype("int32"), epochs=1, batch_size=16, verbose=0).history["loss"][-1]
assert np.isfinite(loss), loss
assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, qat.trainable_weights) if w.shape != ())
"""


def test_qat_model_with_conv1d_attention_and_float_activations_trains_on_jax():
    completed = fresh_python(CODE, KERAS_BACKEND="jax")
    assert completed.returncode == 0, completed.stderr[-3000:]
