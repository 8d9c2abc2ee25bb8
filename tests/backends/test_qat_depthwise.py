"""Depthwise and separable convolutions in QAT off TensorFlow: a MobileNetV2-style block through every step.

Keras's per-channel fake quantization off TensorFlow broadcast its ranges against the last
axis, so a `(3, 3, C, 1)` depthwise kernel quantized along axis 2 became `(3, 3, C, C)`
(issue 20, item 1); these run the numpy references of tests/quantization/test_qat_depthwise.py
on this backend, and the block through every registered step.
"""

import keras
import numpy as np
import pytest

from tests.backends.conftest import off_tensorflow
from tests.quantization.test_qat_depthwise import (
    check_depthwise_fold_and_quantization,
    check_quantize_weight_along_a_middle_axis,
    check_separable_fold_and_quantization,
)

pytestmark = pytest.mark.backends


@off_tensorflow
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_kernel_folds_and_quantizes_per_channel_off_tensorflow(multiplier):
    check_depthwise_fold_and_quantization(multiplier)


@off_tensorflow
def test_separable_kernels_fold_and_quantize_per_channel_off_tensorflow():
    check_separable_fold_and_quantization()


@off_tensorflow
def test_quantize_weight_along_a_middle_axis_off_tensorflow():
    check_quantize_weight_along_a_middle_axis()
