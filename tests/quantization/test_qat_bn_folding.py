"""BatchNormalization folded into the layer before it: same inference, batch statistics in training."""

import keras
import numpy as np
import pytest

from kstruct.quantization import QuantizeWrapper, quantize


def _with_random_statistics(batch_norm, rng):
    channels = batch_norm.moving_mean.shape[0]
    batch_norm.set_weights(
        [
            rng.uniform(0.5, 2.0, channels),  # gamma
            rng.normal(size=channels),  # beta
            rng.normal(size=channels),  # moving mean
            rng.uniform(0.2, 3.0, channels),  # moving variance
        ]
    )


LAYERS = {
    "conv2d": lambda: keras.layers.Conv2D(5, 3, padding="same"),
    "conv2d_no_bias": lambda: keras.layers.Conv2D(5, 3, use_bias=False),
    "depthwise": lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
    "separable": lambda: keras.layers.SeparableConv2D(5, 3),
    "transpose": lambda: keras.layers.Conv2DTranspose(5, 3, strides=2),
    "dense": lambda: keras.layers.Dense(5),
}


def _conv_bn(kind, rng):
    inputs = keras.Input((6, 6, 3))
    layer = LAYERS[kind]()
    batch_norm = keras.layers.BatchNormalization()
    model = keras.Model(inputs, batch_norm(layer(inputs)))
    _with_random_statistics(batch_norm, rng)
    return model, layer


def _folded_float_layer(wrapper, original):
    """A plain copy of the original layer carrying the wrapper's folded float weights."""
    kernels, bias = wrapper.folded_weights()
    config = original.get_config()
    config["use_bias"] = True
    plain = original.__class__.from_config(config)
    plain.build(original.input.shape)
    values = {name: keras.ops.convert_to_numpy(value) for name, value in kernels.items()}
    values["bias"] = keras.ops.convert_to_numpy(bias)
    plain.set_weights([values[w.path.split("/")[-1]] for w in plain.weights])
    return plain


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_folded_float_weights_reproduce_layer_then_batchnorm_in_inference(kind):
    rng = np.random.default_rng(0)
    model, layer = _conv_bn(kind, rng)
    qat = quantize(model)
    wrapper = next(w for w in qat.layers if isinstance(w, QuantizeWrapper))
    assert wrapper.batch_norm is not None
    plain = _folded_float_layer(wrapper, layer)
    x = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x)), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4
    )


def test_training_normalizes_with_batch_statistics_and_updates_moving_ones():
    rng = np.random.default_rng(1)
    model, _ = _conv_bn("conv2d", rng)
    qat = quantize(model)
    wrapper = next(w for w in qat.layers if isinstance(w, QuantizeWrapper))
    gamma, beta, moving_mean, _ = (v.numpy().copy() for v in wrapper.batch_norm.weights)
    x = (3.0 + 2.0 * rng.normal(size=(32, 6, 6, 3))).astype("float32")

    outputs = keras.ops.convert_to_numpy(qat(x, training=True))

    # As BatchNormalization in training: each channel normalized to (beta, |gamma|),
    # up to int8 rounding of weights and output.
    np.testing.assert_allclose(outputs.mean(axis=(0, 1, 2)), beta, atol=0.1)
    np.testing.assert_allclose(outputs.std(axis=(0, 1, 2)), np.abs(gamma), rtol=0.1)
    assert not np.allclose(wrapper.batch_norm.moving_mean.numpy(), moving_mean)
