"""A 4-bit QAT model's `int4` TFLite file: its own weights and its own activation ranges.

The TensorFlow converter cannot write 4-bit tensors, so the file is made the way the
`int4` target makes any file, by ai-edge-quantizer from a float32 file
(`tflite_export.int4`), with two differences that make it reproduce the QAT model:

- the float file is the QAT model run in `float_export`: its kernels are already the
  fake-quantized ones (on the 4-bit grid per channel, or the 8-bit grid of an 8-bit
  layer), so the quantizer stores them unchanged (it keeps a kernel's grid). The
  model converted is `FloatExport(qat_model)`, a saved layer that enters `float_export`
  whenever it runs: off TensorFlow `convert` saves the model and traces it in a
  TensorFlow child, where a context entered in this process would not reach;
- each activation gets the range the QAT model learned, not a calibrated one. The
  float file's tensors carry converter-made names, so ranges are matched by value: the
  QAT model and the float file run on the same samples, and a tensor whose values
  equal a `FakeQuant`'s input takes that quantizer's range.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tflite_export
from tflite_export import int4

from kstruct.quantization.quantizers import FakeQuant, float_export

logger = logging.getLogger(__name__)

_MATCH_SAMPLES = 2  # samples both sides run on to pair tensors with quantizers
_MAX_CALIBRATION = 200


def _samples(representative_data, count: int) -> list[list[np.ndarray]]:
    """Single-sample batches, one array per model input (list or dict inputs flattened in Keras's order)."""
    arrays = [np.asarray(a) for a in keras.tree.flatten(representative_data)]
    n = min(len(arrays[0]), count)
    return [[a[i : i + 1].astype("float32") for a in arrays] for i in range(n)]


def _recorded_ranges(qat_model: keras.Model, samples) -> list[tuple[FakeQuant, list[np.ndarray]]]:
    """Each `FakeQuant` of the model with the input it saw on every sample (float activations)."""
    by_layer: dict[int, tuple[FakeQuant, list[np.ndarray]]] = {}
    for sample in samples:
        record: list = []
        inputs = sample[0] if len(sample) == 1 else sample
        with float_export(record):
            qat_model(inputs, training=False)
        for layer, value in record:
            by_layer.setdefault(id(layer), (layer, []))[1].append(value)
    return list(by_layer.values())


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    if len(a) != len(b) or any(x.size != y.size for x, y in zip(a, b)):
        return False
    for x, y in zip(a, b):
        scale = max(float(np.max(np.abs(y))), 1e-6)
        if not np.allclose(x.reshape(-1), y.reshape(-1), rtol=1e-4, atol=1e-5 * scale):
            return False
    return True


def activation_ranges(qat_model: keras.Model, float_blob: bytes, samples) -> dict[str, tuple[float, float]]:
    """`{float file tensor: (min, max)}` from the QAT model's quantizers, matched by value on `samples`.

    A tensor the quantizers do not cover (a max pool's output, which TFLite gives its
    input's scale anyway) keeps its calibrated range.
    """
    quantizers = _recorded_ranges(qat_model, samples)
    ranges = {}
    for name, values in int4.activation_values(float_blob, samples).items():
        match = next((layer for layer, seen in quantizers if _same(values, seen)), None)
        if match is not None:
            ranges[name] = match.value_bounds()
    logger.info("int4 file: %d of %d quantizer ranges matched to tensors", len(ranges), len(quantizers))
    return ranges


@keras.saving.register_keras_serializable(package="kstruct")
class FloatExport(keras.layers.Wrapper):
    """Runs a QAT model in `float_export` (activation quantizers passed through, kernels rounded in plain ops).

    What `int4_file` converts to the float file. The switch lives in the layer, not in
    the caller's context, so it survives `model.save` and the TensorFlow child that
    converts a model trained on JAX or PyTorch (`tflite_export.convert`), and the child
    traces exactly the ops this process would.
    """

    def call(self, inputs):
        with float_export():
            return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def float_export_model(qat_model: keras.Model) -> keras.Model:
    """`qat_model` as the float model ai-edge-quantizer starts from: same inputs (names, order), `FloatExport` inside."""
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name), qat_model.input
    )
    return keras.Model(inputs, FloatExport(qat_model, name="float_export")(inputs), name=f"{qat_model.name}_float")


def int4_file(qat_model: keras.Model, representative_data) -> bytes:
    """The `int4` TFLite file of a QAT model (`quantize(model, bits=4)`): its kernels and ranges exactly.

    Args:
        qat_model: a model from `kstruct.quantization.quantize`, trained.
        representative_data: model inputs (an array, or a list/dict of arrays); up to 200
            samples calibrate any tensor no quantizer covers.

    Returns:
        The `.tflite` bytes: 4-bit kernels where the model trained 4-bit ones, 8-bit
        kernels elsewhere, int8 activations with the model's ranges.
    """
    float_blob = tflite_export.convert(float_export_model(qat_model), "float32")
    samples = _samples(representative_data, _MAX_CALIBRATION)
    ranges = activation_ranges(qat_model, float_blob, samples[:_MATCH_SAMPLES])
    return int4.quantize_float_file(float_blob, "int4", samples, activation_ranges=ranges)


def weight_bits_by_layer(qat_model: keras.Model) -> dict[str, int]:
    """`{layer: 4 or 8}` for each quantized weighted layer (nested models' too): what `layers=` chose."""
    from kstruct.quantization.layers import QuantizeWrapper

    found = {}
    for layer in qat_model.layers:
        if isinstance(layer, QuantizeWrapper):
            found[layer.layer.name] = layer.weight_bits
        elif isinstance(layer, keras.Model):
            found.update(weight_bits_by_layer(layer))
    return found
