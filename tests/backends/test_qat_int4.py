"""`qat(bits=4)` off TensorFlow: the int4 file, made from a model trained on JAX or PyTorch in a TensorFlow
child, holds the QAT model's own 4-bit kernels (issue 25). tests/quantization/test_qat_int4.py covers the
rest on TensorFlow."""

import keras
import numpy as np
import pytest

import tflite_export
from kstruct.quantization import QuantizeWrapper, quantize
from kstruct.quantization.int4_export import int4_file
from tests.backends.conftest import off_tensorflow

pytestmark = [pytest.mark.backends, off_tensorflow]


def test_int4_file_of_a_model_trained_off_tensorflow_holds_its_fake_quantized_kernels():
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="hidden"), keras.layers.Dense(4, name="out")]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(4).normal(size=(64, 12)).astype("float32")
    y = x[:, :4].argmax(-1).astype("int32")
    qat_model = quantize(model, bits=4)
    qat_model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    blob = int4_file(qat_model, x[:32])
    stored = {w.shape: w for w in tflite_export.quantized_weights(blob)}
    for layer in qat_model.layers:
        if isinstance(layer, QuantizeWrapper):
            kernel = np.asarray(keras.ops.convert_to_numpy(layer.quantized_weights()[0]["kernel"])).T  # (out, in)
            weights = stored[kernel.shape]
            assert weights.dtype == "int4" and weights.scale.size == kernel.shape[0], layer.name
            np.testing.assert_allclose(weights.dequantized(), kernel, rtol=1e-6, atol=1e-8, err_msg=layer.name)
