"""Zeros from pruning stay exactly zero through QAT training and in the int8 file."""

import keras
import numpy as np
import pytest

import tflite_export
from kstruct.models import compile_for_classification, example_cnn
from kstruct.pruning import ConstantSparsity, prune, strip
from kstruct.quantization import QuantizeWrapper, quantize
from qat_helpers import weight_tensors

# TFLite weight layouts, as transposes of Keras kernels.
_TO_KERAS = {"CONV_2D": (1, 2, 3, 0), "FULLY_CONNECTED": (1, 0)}


@pytest.fixture(scope="module")
def pruned_cnn(digits):
    keras.utils.set_random_seed(2)
    x_train, y_train, _, _ = digits
    model = compile_for_classification(example_cnn())
    wrapped = compile_for_classification(prune(model, schedule=ConstantSparsity(0.6, begin_step=0, frequency=4)))
    wrapped.fit(x_train[:640], y_train[:640], epochs=1, batch_size=64, verbose=0)
    return compile_for_classification(strip(wrapped))


def _zeros(model):
    return {layer.name: layer.kernel.numpy() == 0 for layer in model.layers if hasattr(layer, "kernel")}


def _trained_qat(pruned_cnn, digits, preserve_sparsity):
    x_train, y_train, _, _ = digits
    qat = quantize(pruned_cnn, preserve_sparsity=preserve_sparsity)
    qat.fit(x_train[:640], y_train[:640], epochs=1, batch_size=64, verbose=0)
    return qat


def test_pruned_zeros_stay_zero_through_qat_training_and_in_int8_file(pruned_cnn, digits):
    zeros = _zeros(pruned_cnn)
    assert all(mask.mean() > 0.5 for mask in zeros.values())
    qat = _trained_qat(pruned_cnn, digits, preserve_sparsity=True)

    wrappers = {w.layer.name: w for w in qat.layers if isinstance(w, QuantizeWrapper)}
    for name, mask in zeros.items():
        kernels, _ = wrappers[name].quantized_weights()
        assert np.all(keras.ops.convert_to_numpy(kernels["kernel"])[mask] == 0), name

    blob = tflite_export.convert(qat, "int8", representative_data=digits[0][:50])
    tensors = weight_tensors(blob, "CONV_2D") + weight_tensors(blob, "FULLY_CONNECTED")
    ops = ["CONV_2D"] * 2 + ["FULLY_CONNECTED"] * 2
    for tensor, op, name in zip(tensors, ops, ["conv1", "conv2", "dense1", "classifier"]):
        values = np.transpose(tensor["values"], _TO_KERAS[op])
        assert values.dtype == np.int8
        assert np.all(values[zeros[name]] == 0), name


def test_without_preserve_sparsity_training_moves_the_zeros(pruned_cnn, digits):
    zeros = _zeros(pruned_cnn)
    qat = _trained_qat(pruned_cnn, digits, preserve_sparsity=False)
    wrappers = {w.layer.name: w for w in qat.layers if isinstance(w, QuantizeWrapper)}
    kernel = wrappers["dense1"].layer.kernel.numpy()
    assert np.mean(kernel[zeros["dense1"]] != 0) > 0.5


def test_only_kernels_with_zeros_get_a_sparsity_mask(pruned_cnn):
    """A dense kernel has no zeros to keep, so it pays no mask multiply on each training step."""
    dense = keras.models.clone_model(pruned_cnn)
    dense.set_weights([np.where(w == 0, 1e-3, w) for w in pruned_cnn.get_weights()])
    dense.get_layer("classifier").kernel.assign(np.where(np.eye(64, 10) > 0, 0.0, 1e-3))  # one layer with zeros

    wrappers = {w.layer.name: w for w in quantize(dense).layers if isinstance(w, QuantizeWrapper)}

    assert {name: w.preserve_sparsity for name, w in wrappers.items()} == {
        "conv1": False, "conv2": False, "dense1": False, "classifier": True
    }
    assert [v.name for v in wrappers["dense1"].weights if "mask" in v.name] == []
    assert [v.name for v in wrappers["classifier"].weights if "mask" in v.name] == ["kernel_mask"]
    assert wrappers["classifier"].sparsity_masks["kernel"].numpy().sum() == 640 - 10
