"""QAT keeps pruned zeros off TensorFlow too, in layers it quantizes and in those it leaves in float
(grouped and 3-D convolutions, recurrent layers), trained by JAX's and PyTorch's own training steps
(issue 20, item 11). tests/quantization/test_qat_keeps_pruned_zeros.py covers every kind on TensorFlow;
this chain is shorter, as each recurrent layer costs JAX a compilation."""

import keras
import pytest

from tests.backends.conftest import off_tensorflow
from tests.quantization.test_qat_keeps_pruned_zeros import (
    check_deployed_zeros,
    check_nonzero_counts,
    pruned_then_trained_qat,
)

pytestmark = [pytest.mark.backends, off_tensorflow]
L = keras.layers


def quantized_and_float_kinds() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            L.Conv2D(8, 3, groups=2, padding="same", name="grouped_conv2d"),
            L.DepthwiseConv2D(3, padding="same", name="depthwise"),
            L.Reshape((8, 8, 8, 1)),
            L.Conv3D(2, 3, padding="same", name="conv3d"),
            L.Reshape((4, 256)),
            L.Conv1D(7, 3, padding="same", name="conv1d"),
            L.LSTM(6, return_sequences=True, name="lstm"),
            L.TimeDistributed(L.Dense(9, name="inner_dense"), name="time_distributed"),
            L.GlobalAveragePooling1D(),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )


def test_pruned_zeros_stay_through_qat_in_quantized_and_float_layers_off_tensorflow():
    pruned, qat, _ = pruned_then_trained_qat(quantized_and_float_kinds(), run_eagerly=False)
    check_nonzero_counts(pruned, qat, ["grouped_conv2d", "depthwise", "conv3d", "conv1d", "lstm", "time_distributed", "out"])
    check_deployed_zeros(pruned, qat)
