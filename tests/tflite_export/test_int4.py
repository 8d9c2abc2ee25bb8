"""The int4 and int4-weights targets: 4-bit kernels made by ai-edge-quantizer, read back from the file."""

import warnings

import keras
import numpy as np
import pytest

import tflite_export
from tflite_export import int4


def _float_kernels(model) -> list[np.ndarray]:
    """The model's kernels in TFLite's layout (output channels first), largest first as we compare by shape."""
    kernels = []
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            kernel = np.asarray(layer.kernel)
            kernels.append(kernel.T if kernel.ndim == 2 else np.moveaxis(kernel, -1, 0))
    return kernels


def test_int4_file_stores_every_dense_and_conv_kernel_in_4_bits_per_channel(cnn_blob, trained_cnn):
    blob = cnn_blob("int4")
    weights = tflite_export.quantized_weights(blob)
    assert [w.dtype for w in weights] == ["int4"] * 4
    by_shape = {w.shape: w for w in weights}
    for kernel in _float_kernels(trained_cnn):
        stored = by_shape[kernel.shape]
        assert stored.packed_bytes == (kernel.size + 1) // 2  # two values a byte
        assert stored.scale.shape == (kernel.shape[0],) and stored.axis == 0  # one scale per output channel
        assert stored.values.min() >= -8 and stored.values.max() <= 7
        # Symmetric: each channel's largest weight is +-7 steps, and every weight is within half a step.
        step = stored.scale.reshape((-1,) + (1,) * (kernel.ndim - 1))
        np.testing.assert_allclose(np.abs(kernel).max(axis=tuple(range(1, kernel.ndim))), 7 * stored.scale, rtol=1e-5)
        assert np.all(np.abs(stored.dequantized() - kernel) <= step / 2 + 1e-7)
    analysis = tflite_export.analyze(blob, gpu_analyzer=False)
    assert analysis.weight_dtypes == {"int4": 4}
    assert analysis.weight_bytes["int4"] == sum(w.packed_bytes for w in weights)
    assert analysis.inputs[0].dtype == analysis.outputs[0].dtype == "int8"
    assert "int4 x4" in analysis.to_text()


def test_int4_files_are_half_the_int8_file_and_predict_like_the_float_model(cnn_blob, mnist):
    _, _, x_test, _ = mnist
    reference = tflite_export.predict(cnn_blob("float32"), x_test).argmax(-1)
    assert len(cnn_blob("int4")) < 0.6 * len(cnn_blob("int8"))
    for target in ("int4", "int4-weights"):
        agreement = np.mean(tflite_export.predict(cnn_blob(target), x_test).argmax(-1) == reference)
        assert agreement > 0.9, (target, agreement)


def test_int4_weights_file_dequantizes_4_bit_kernels_to_float(cnn_blob):
    analysis = tflite_export.analyze(cnn_blob("int4-weights"), gpu_analyzer=False)
    assert analysis.weight_dtypes == {"int4": 4}
    assert analysis.op_counts["DEQUANTIZE"] == 4
    assert analysis.inputs[0].dtype == analysis.outputs[0].dtype == "float32"


def _on_grid(kernel: np.ndarray, bits: int) -> np.ndarray:
    """`kernel` moved onto the symmetric per-tensor grid of `bits` bits."""
    scale = np.abs(kernel).max() / (2 ** (bits - 1) - 1)
    return (np.round(kernel / scale) * scale).astype("float32")


def test_a_kernel_already_on_the_8_bit_grid_keeps_8_bits_and_its_values(tiny_dense, rng):
    import keras

    model = keras.models.clone_model(tiny_dense)
    first, second = model.layers
    second.kernel.assign(_on_grid(np.asarray(second.kernel), 8))
    blob = tflite_export.convert(model, "int4", rng.normal(size=(50, 8)).astype("float32"))
    stored = {w.shape: w for w in tflite_export.quantized_weights(blob)}
    assert stored[(16, 8)].dtype == "int4"  # a float kernel gets the target's 4 bits
    kept = stored[(4, 16)]
    assert kept.dtype == "int8" and kept.scale.size == 1  # per tensor, as it was quantized
    np.testing.assert_allclose(kept.dequantized(), np.asarray(second.kernel).T, rtol=1e-6, atol=1e-7)


def test_given_activation_ranges_set_the_scales_of_those_tensors(tiny_dense, rng):
    samples = [[x[None]] for x in rng.normal(size=(20, 8)).astype("float32")]
    float_blob = tflite_export.convert(tiny_dense, "float32")
    hidden = next(name for name in int4.activation_values(float_blob, samples[:1]) if "Relu" in name)
    blob = int4.quantize_float_file(float_blob, "int4", samples, activation_ranges={hidden: (0.0, 5.1)})
    from ai_edge_litert.interpreter import Interpreter

    scales = {d["name"]: d["quantization"] for d in Interpreter(model_content=blob).get_tensor_details()}
    assert scales[hidden] == pytest.approx((5.1 / 255, -128), rel=1e-6)
    with pytest.raises(tflite_export.ExportError, match="does not have"):
        int4.quantize_float_file(float_blob, "int4", samples, activation_ranges={"no such tensor": (0.0, 1.0)})


def test_int4_target_needs_calibration_data(tiny_dense):
    with pytest.raises(tflite_export.ExportError, match="representative_data"):
        tflite_export.convert(tiny_dense, "int4")


def test_an_all_zero_kernel_channel_keeps_its_bias_in_the_int4_file():
    # ai-edge-quantizer scales a pruned unit by 1e-9 / 7, and its bias overflows int32 ("invalid value
    # encountered in cast"): the file must add that unit's bias, not garbage.
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="dense")])
    kernel, _ = model.get_layer("dense").get_weights()
    kernel[:, 1] = 0.0
    model.get_layer("dense").set_weights([kernel, np.array([0.1, 0.5, -0.2, 0.3], "float32")])
    x = np.random.default_rng(0).normal(size=(50, 8)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        blob = tflite_export.convert(model, "int4", x)
    (weights,) = tflite_export.quantized_weights(blob)
    assert weights.scale[1] == 1.0 and not np.any(weights.values[1])
    step = tflite_export.analyze(blob, gpu_analyzer=False).outputs[0].scale[0]
    np.testing.assert_allclose(tflite_export.predict(blob, x)[:, 1], 0.5, atol=step)
