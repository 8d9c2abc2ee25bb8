"""A mixed_float16 model trained off TensorFlow (issue 20, item 3): JAX and PyTorch train it under the
global policy people set for GPUs, and the file converted in the TensorFlow child (from the model's
float32 twin) agrees with the Keras model."""

import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from tests.backends.conftest import BACKEND, off_tensorflow
from tests.tflite_export.test_precision import global_policy, mixed_cnn

pytestmark = pytest.mark.backends


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, size=(48, 8, 8, 3)).astype("float32")
    return x, rng.integers(0, 4, size=48)


def _compiled(model):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@off_tensorflow
def test_mixed_float16_cnn_trains_prune_qat_off_tensorflow_and_its_int8_file_agrees():
    x, y = _data()
    with global_policy("mixed_float16"):
        model = _compiled(mixed_cnn())
        result = kstruct.optimize(model, "prune(0.5) + qat", train_data=(x, y), validation_data=(x[:16], y[:16]),
                                  epochs=1, batch_size=16, target="int8", verbose=0)
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    original, pruned, qat = result.report.stages
    assert pruned.backend == qat.backend == BACKEND
    assert pruned.sparsity == pytest.approx(0.5, abs=0.02)  # the masks trained under the policy (torch: was 0%)
    difference = np.abs(tflite_export.predict(result.tflite, x) - np.asarray(result.model.predict(x, verbose=0))).max()
    assert difference <= 2 / 256, difference


@off_tensorflow
def test_prune_channels_removes_channels_of_a_mixed_float16_model_off_tensorflow():
    x, y = _data()
    with global_policy("mixed_float16"):
        model = _compiled(mixed_cnn())
        result = kstruct.optimize(model, "prune_channels(0.5)", train_data=(x, y), validation_data=(x[:16], y[:16]),
                                  epochs=1, batch_size=16, target="float32", verbose=0)
    # torch assigned the channel mask to a float16 copy under the wrapper's autocast scope: 1764 -> 1764.
    assert result.model.count_params() < 0.7 * model.count_params()
    assert result.model.get_layer("conv").dtype_policy.name == "mixed_float16"
    assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    expected = np.asarray(result.model.predict(x, verbose=0))
    assert np.abs(tflite_export.predict(result.tflite, x) - expected).max() <= 3e-3
