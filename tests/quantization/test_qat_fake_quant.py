"""`FakeQuant`: activation ranges learned while training, frozen at inference."""

import keras
import numpy as np
import pytest

from kstruct.quantization import FakeQuant


def _range(layer):
    return float(layer.min_value.numpy()), float(layer.max_value.numpy())


def test_first_training_batch_sets_the_range_then_it_follows_a_moving_average():
    layer = FakeQuant(ema_decay=0.9)
    layer(np.array([[-1.0, 3.0]], "float32"), training=True)
    assert _range(layer) == pytest.approx((-1.0, 3.0))

    layer(np.array([[1.0, 13.0]], "float32"), training=True)
    # The range always holds 0, so the batch counts as (0, 13).
    assert _range(layer) == pytest.approx((0.9 * -1.0, 0.9 * 3.0 + 0.1 * 13.0))


def test_nonnegative_range_keeps_its_minimum_at_zero_and_tracks_the_maximum():
    layer = FakeQuant(ema_decay=0.9, nonnegative=True)
    layer(np.array([[0.0, 4.0]], "float32"), training=True)
    assert _range(layer) == pytest.approx((0.0, 4.0))
    layer(np.array([[0.5, 14.0]], "float32"), training=True)
    assert _range(layer) == pytest.approx((0.0, 0.9 * 4.0 + 0.1 * 14.0))
    assert layer.quantization_params()[1] == -128  # 0.0 is the lowest int8 level, as for a fused ReLU


def test_relu_outputs_are_quantized_as_nonnegative_and_others_are_not(float_cnn):
    from kstruct.quantization import quantize

    qat = quantize(float_cnn)
    nonnegative = {layer.name: layer.output_quantizer.nonnegative for layer in qat.layers if hasattr(layer, "output_quantizer")}
    # conv1, conv2 and dense1 end in a fused ReLU; the classifier's logits feed a softmax.
    assert nonnegative == {"quant_conv1": True, "quant_conv2": True, "quant_dense1": True, "quant_classifier": False}


def test_inference_neither_moves_the_range_nor_leaves_the_grid():
    layer = FakeQuant()
    layer(np.array([[-2.0, 2.0]], "float32"), training=True)
    before = _range(layer)
    outputs = keras.ops.convert_to_numpy(layer(np.linspace(-5, 5, 101, dtype="float32")[None], training=False))

    assert _range(layer) == before
    scale, zero_point = layer.quantization_params()
    levels = outputs / scale + zero_point
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert np.round(levels).min() == -128 and np.round(levels).max() == 127


def test_fixed_range_rounds_to_its_grid_at_inference_only():
    layer = FakeQuant(value_range=(0.0, 255.0 / 256.0))
    x = np.array([[0.0011, 0.5, 0.9993]], "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), [[0.0, 0.5, 255 / 256]], atol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=True)), x)
    assert layer.weights == []


def test_fake_quant_config_round_trips():
    layer = FakeQuant(ema_decay=0.95, value_range=(-1.0, 127 / 128))
    clone = FakeQuant.from_config(layer.get_config())
    assert (clone.ema_decay, clone.value_range, clone.nonnegative) == (0.95, (-1.0, 127 / 128), False)
    assert FakeQuant.from_config(FakeQuant(nonnegative=True).get_config()).nonnegative
    with pytest.raises(ValueError, match=r"Expected `ema_decay` in \[0, 1\). Received: ema_decay=1.5"):
        FakeQuant(ema_decay=1.5)
