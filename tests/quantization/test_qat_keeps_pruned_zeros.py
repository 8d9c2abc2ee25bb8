"""QAT keeps every pruned zero, in every kind of layer pruning covers, through training and in the int8 file.

Issue 20, item 11: a grouped Conv2D (left in float by QAT) lost its zeros while QAT
trained it (50.0% sparsity after `prune`, 45.4% after `qat`). Layers QAT leaves in
float (grouped and 3-D convolutions, recurrent layers and the wrappers around them)
must keep them as the int8-quantized ones do.
"""

import keras
import numpy as np
import pytest

import tflite_export
from kstruct.pruning import ConstantSparsity, prune, strip
from kstruct.quantization import FloatPassthrough, QuantizeWrapper, quantize

L = keras.layers


def every_prunable_kind() -> keras.Model:
    """One chain through each layer kind `prune` covers (tiny: 8x8x4 images, 4 time steps)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            L.Conv2D(6, 3, padding="same", name="conv2d"),
            L.Conv2D(8, 3, groups=2, padding="same", name="grouped_conv2d"),
            L.DepthwiseConv2D(3, padding="same", name="depthwise"),
            L.SeparableConv2D(5, 3, padding="same", name="separable"),
            L.Conv2DTranspose(3, 3, padding="same", name="conv2d_transpose"),
            L.Reshape((8, 8, 3, 1)),
            L.Conv3D(2, 3, padding="same", name="conv3d"),
            L.Reshape((4, 96)),
            L.Conv1D(7, 3, padding="same", name="conv1d"),
            L.LSTM(6, return_sequences=True, name="lstm"),
            L.GRU(5, return_sequences=True, name="gru"),
            L.SimpleRNN(4, return_sequences=True, name="simple_rnn"),
            L.Bidirectional(L.LSTM(3, return_sequences=True, name="inner_lstm"), name="bidirectional"),
            L.TimeDistributed(L.Dense(9, name="inner_dense"), name="time_distributed"),
            L.GlobalAveragePooling1D(),
            L.Dense(12, activation="relu", name="dense"),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )


KINDS = [
    "conv2d", "grouped_conv2d", "depthwise", "separable", "conv2d_transpose", "conv3d", "conv1d",
    "lstm", "gru", "simple_rnn", "bidirectional", "time_distributed", "dense", "out",
]


def _kernels(layer) -> dict[str, np.ndarray]:
    """A layer's kernels (nested layers' included) by variable path below the layer."""
    return {
        v.path.split("/", 1)[-1]: np.asarray(keras.ops.convert_to_numpy(v))
        for v in layer.weights
        if "kernel" in v.name and len(v.shape) >= 2
    }


def _inner(layer):
    return layer.layer if isinstance(layer, (QuantizeWrapper, FloatPassthrough)) else layer


def _nonzero(model) -> dict[str, int]:
    counts = {}
    for layer in model.layers:
        kernels = _kernels(_inner(layer))
        if kernels:
            counts[_inner(layer).name] = sum(int(np.count_nonzero(k)) for k in kernels.values())
    return counts


def _fit(model, x, y, run_eagerly: bool):
    model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=run_eagerly)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return model


def pruned_then_trained_qat(model: keras.Model, run_eagerly: bool = True):
    """(pruned model, QAT model after one epoch, x): `prune(0.5)` stripped, then `quantize` and `fit`."""
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8, 8, 4), dtype="float32"), np.arange(32) % 3  # both chains take 8x8x4 images
    schedule = ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = strip(_fit(prune(model, schedule=schedule), x, y, run_eagerly))
    with pytest.warns(UserWarning, match="grouped_conv2d"):  # left in float, with the others QAT does not quantize
        qat = quantize(pruned)
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in qat.trainable_weights]
    _fit(qat, x, y, run_eagerly)
    moved = [not np.array_equal(b, keras.ops.convert_to_numpy(v)) for b, v in zip(before, qat.trainable_weights)]
    assert sum(moved) > len(moved) // 2  # QAT did train
    return pruned, qat, x


@pytest.fixture(scope="module")
def pruned_then_qat():
    # Eager on TensorFlow: two batches train faster than tracing the recurrent layers into a graph.
    pruned, qat, x = pruned_then_trained_qat(every_prunable_kind(), run_eagerly=True)
    return pruned, qat, tflite_export.convert(qat, "int8", representative_data=x[:8])


def check_nonzero_counts(pruned, qat, kinds) -> None:
    """Each kind was pruned, and holds as many non-zero weights after QAT training as after pruning."""
    after_prune, after_qat = _nonzero(pruned), _nonzero(qat)
    assert sorted(after_prune) == sorted(kinds)
    sizes = {layer.name: sum(k.size for k in _kernels(layer).values()) for layer in pruned.layers}
    assert all(after_prune[name] < sizes[name] for name in kinds), after_prune  # each kind was pruned
    assert after_qat == after_prune


def test_every_prunable_kind_keeps_its_nonzero_count_through_qat(pruned_then_qat):
    check_nonzero_counts(*pruned_then_qat[:2], KINDS)


def check_deployed_zeros(pruned, qat) -> None:
    """What each wrapper computes with (its fake-quantized or float kernels) is zero wherever pruning left a zero."""
    for wrapper in qat.layers:
        if isinstance(wrapper, QuantizeWrapper):
            deployed = {name: keras.ops.convert_to_numpy(k) for name, k in wrapper.quantized_weights()[0].items()}
            deployed = {name: value.reshape(getattr(wrapper.layer, name).shape) for name, value in deployed.items()}
            original = {name: getattr(pruned.get_layer(wrapper.layer.name), name).numpy() for name in deployed}
        elif isinstance(wrapper, FloatPassthrough):
            deployed, original = _kernels(wrapper.layer), _kernels(pruned.get_layer(wrapper.layer.name))
        else:
            continue
        for name, kernel in original.items():
            assert np.all(deployed[name][kernel == 0] == 0), f"{wrapper.layer.name}/{name}"


def test_qat_computes_with_the_pruned_zeros_of_every_kind(pruned_then_qat):
    check_deployed_zeros(*pruned_then_qat[:2])


def _file_kernels(blob: bytes) -> list[tuple[tuple, int]]:
    """(sorted dimensions without 1s, zero count) of each constant tensor of rank >= 2 in the file."""
    from qat_helpers import interpreter  # here: tests/backends imports this module without tests/quantization on the path

    it = interpreter(blob)
    found = []
    for tensor in it.get_tensor_details():
        if len(tensor["shape"]) < 2:
            continue
        try:
            values = it.get_tensor(tensor["index"])
        except ValueError:  # not a constant
            continue
        zero = tensor["quantization"][1] if np.issubdtype(values.dtype, np.integer) else 0
        key = tuple(sorted(d for d in values.shape if d != 1))
        found.append((key, int(np.count_nonzero(values == zero))))
    return found


def test_pruned_zeros_are_zeros_in_the_int8_file(pruned_then_qat):
    """Each pruned kernel is in the file (transposed, quantized, or copied per time step) with at least its zeros."""
    pruned, _, blob = pruned_then_qat
    available: dict[tuple, list[int]] = {}
    for key, zeros in _file_kernels(blob):
        available.setdefault(key, []).append(zeros)
    needed: dict[tuple, list[tuple[str, int]]] = {}
    for name in KINDS:
        for path, kernel in _kernels(pruned.get_layer(name)).items():
            zeros = int(np.count_nonzero(kernel == 0))
            if zeros:
                needed.setdefault(tuple(sorted(d for d in kernel.shape if d != 1)), []).append((f"{name}/{path}", zeros))
    # GRU's recurrent kernel is split per gate in the file; every other kernel is one tensor.
    needed = {key: kernels for key, kernels in needed.items() if not any(name.startswith("gru/") for name, _ in kernels)}
    assert len(needed) >= 12
    for key, kernels in needed.items():
        # Matched largest to largest: the file's tensors of this shape hold at least the pruned zeros, one by one.
        have = sorted(available.get(key, []), reverse=True)
        want = sorted(kernels, key=lambda kernel: -kernel[1])
        assert len(have) >= len(want), (key, kernels, have)
        for (name, zeros), found in zip(want, have):
            assert found >= zeros, f"{name}: {zeros} zeros after pruning, {found} in the int8 file"


def test_float_passthrough_config_keeps_preserve_sparsity(pruned_then_qat):
    _, qat, _ = pruned_then_qat
    wrapper = next(layer for layer in qat.layers if isinstance(layer, FloatPassthrough) and layer.layer.name == "gru")
    assert wrapper.preserve_sparsity
    assert FloatPassthrough.from_config(wrapper.get_config()).preserve_sparsity
