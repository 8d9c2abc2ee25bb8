"""A MobileNetV2-style block (1x1 expand, depthwise, 1x1 project, each with BatchNorm; ReLU6; residual Add)
through the registered steps off TensorFlow (issue 20, item 1: its QAT failed on JAX and PyTorch).

test_steps.py's CHECKED names, for every registered step, the test that trains it off TensorFlow; most
of them are here, on this block, since depthwise + BatchNorm is what MobileNets add, and what each step
must handle on every backend: QAT folds the BatchNorm into the depthwise kernel,
structure steps cut the expanded channels and the residual block, clustering and pruning mask
the depthwise kernel.
"""

import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from tests.backends.conftest import BACKEND, off_tensorflow

pytestmark = [pytest.mark.backends, off_tensorflow]
L = keras.layers

def mobilenet_v2_block(name: str = "mobilenet_block") -> keras.Model:
    """Stem, then two inverted residual blocks (8 -> 16 -> depthwise -> 8, + input), pooled to 3 classes."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = L.ReLU(6.0)(L.BatchNormalization(name="stem_bn")(x))
    for i in range(2):
        h = L.Conv2D(16, 1, use_bias=False, name=f"expand{i}")(x)
        h = L.ReLU(6.0)(L.BatchNormalization(name=f"expand{i}_bn")(h))
        h = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"depthwise{i}")(h)
        h = L.ReLU(6.0)(L.BatchNormalization(name=f"depthwise{i}_bn")(h))
        h = L.BatchNormalization(name=f"project{i}_bn")(L.Conv2D(8, 1, use_bias=False, name=f"project{i}")(h))
        x = L.Add(name=f"add{i}")([x, h])
    outputs = L.Dense(3, activation="softmax", name="out")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs, name=name)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((48, 8, 8, 3), dtype="float32"), np.arange(48) % 3


def test_qat_through_optimize_folds_batchnorm_into_the_depthwise_kernel(data):
    from kstruct.quantization import QuantizeWrapper

    x, y = data
    result = kstruct.optimize(mobilenet_v2_block(), "qat", train_data=(x, y), validation_data=(x[:16], y[:16]),
                              epochs=1, batch_size=16, verbose=0)
    qat = result.report.stages[-1]
    assert qat.backend == BACKEND and qat.notes["float_layers"] == {}
    wrappers = {w.layer.name: w for w in result.model.layers if isinstance(w, QuantizeWrapper)}
    for i in range(2):
        depthwise = wrappers[f"depthwise{i}"]
        assert depthwise.batch_norm.name == f"depthwise{i}_bn" and depthwise.quantized_kernels == {"kernel": 2}
        kernel = keras.ops.convert_to_numpy(depthwise.quantized_weights()[0]["kernel"])
        assert kernel.shape == (3, 3, 16, 1)
    # The int8 file computes what the QAT model computes, within an int8 output step or two.
    step = tflite_export.analyze(result.tflite).outputs[0].scale[0]
    assert qat.max_abs_diff <= 2 * step + 1e-6, (qat.max_abs_diff, step)


def test_prune_masks_the_depthwise_kernel_and_strips_exactly(data):
    from kstruct.pruning import ConstantSparsity, prune, strip
    from kstruct.quantization import quantize

    x, y = data
    wrapped = prune(mobilenet_v2_block(), schedule=ConstantSparsity(0.5, begin_step=0, frequency=1))
    wrapped.compile("adam", "sparse_categorical_crossentropy")
    wrapped.fit(x, y, epochs=1, batch_size=16, verbose=0)
    stripped = strip(wrapped)
    for i in range(2):
        kernel = stripped.get_layer(f"depthwise{i}").kernel.numpy()
        assert np.sum(kernel == 0) == kernel.size // 2
    np.testing.assert_allclose(stripped.predict(x, verbose=0), wrapped.predict(x, verbose=0), atol=1e-6)
    # QAT of the pruned block keeps the depthwise zeros through the BatchNorm fold and training.
    qat = quantize(stripped)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for wrapper in qat.layers:
        if getattr(wrapper, "layer", None) is not None and wrapper.layer.name.startswith("depthwise"):
            zeros = stripped.get_layer(wrapper.layer.name).kernel.numpy() == 0
            assert np.all(wrapper.layer.kernel.numpy()[zeros] == 0)
            assert np.all(keras.ops.convert_to_numpy(wrapper.quantized_weights()[0]["kernel"])[zeros] == 0)


def test_prune_channels_cuts_the_expanded_channels_through_the_depthwise_layer(data):
    from kstruct.pruning import prune_channels, strip

    x, y = data
    masked = prune_channels(mobilenet_v2_block(), 0.5)
    masked.compile("adam", "sparse_categorical_crossentropy")
    masked.fit(x, y, epochs=1, batch_size=16, verbose=0)
    stripped = strip(masked)
    for i in range(2):
        assert stripped.get_layer(f"expand{i}").filters == 8
        assert tuple(stripped.get_layer(f"depthwise{i}").kernel.shape) == (3, 3, 8, 1)
        assert stripped.get_layer(f"project{i}").kernel.shape[2] == 8
    np.testing.assert_allclose(stripped.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5)


def test_drop_blocks_removes_one_inverted_residual_block(data):
    from kstruct.pruning import drop_blocks, removable_blocks

    x, y = data
    model = mobilenet_v2_block()
    blocks = removable_blocks(model)
    smaller = drop_blocks(model, 1, data=(x[:16], y[:16]))
    assert len(removable_blocks(smaller)) == len(blocks) - 1
    assert smaller.count_params() < model.count_params()
    adds = [layer.name for layer in smaller.layers if isinstance(layer, L.Add)]
    depthwise = [layer.name for layer in smaller.layers if isinstance(layer, L.DepthwiseConv2D)]
    assert len(adds) == 1 and len(depthwise) == 1 and adds[0][-1] == depthwise[0][-1]
    assert smaller.predict(x[:4], verbose=0).shape == (4, 3)


def test_cluster_then_cluster_preserving_qat_keeps_the_depthwise_values(data, tmp_path):
    from kstruct import clustering
    from kstruct.quantization import quantize

    x, y = data
    # DepthwiseConv2D is clustered when named (its kernels are small); the 1x1 convolutions by default.
    clustered = clustering.cluster(mobilenet_v2_block(), 8, layers=[r"depthwise\d", r"expand\d", r"project\d"])
    clustered.compile("adam", "sparse_categorical_crossentropy")
    clustered.fit(x, y, epochs=1, batch_size=16, verbose=0)
    clustered.save(tmp_path / "clustered.keras")  # the wrapped model saves and loads on this backend
    reloaded = keras.models.load_model(tmp_path / "clustered.keras")
    np.testing.assert_array_equal(reloaded.predict(x[:16], verbose=0), clustered.predict(x[:16], verbose=0))
    stripped = clustering.strip(clustered)
    for name in ("depthwise0", "depthwise1", "expand0", "project1"):
        assert 2 <= np.unique(stripped.get_layer(name).kernel.numpy()).size <= 8, name
    assert np.abs(stripped.predict(x[:16], verbose=0) - clustered.predict(x[:16], verbose=0)).max() < 1e-5

    # Cluster-preserving QAT: the values train as centroids, each kernel stays on 8 of them.
    qat = quantize(stripped)
    qat.compile("adam", "sparse_categorical_crossentropy")
    valued = [w for w in qat.layers if getattr(w, "kernel_value_weights", None)]

    def values(w):
        return keras.ops.convert_to_numpy(w.kernel_value_weights["kernel"]).copy()

    before = [values(w) for w in valued]
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert valued and all(np.abs(values(w) - b).max() > 0 for w, b in zip(valued, before))
    snapped = [w.snapped_kernels["kernel"] for w in qat.layers if getattr(w, "snapped_kernels", None)
               and w.layer.name.startswith("depthwise")]
    assert len(snapped) == 2
    assert all(np.unique(keras.ops.convert_to_numpy(kernel)).size <= 8 for kernel in snapped)


def test_ptq_through_optimize_calibrates_the_int8_file_in_the_tensorflow_child(data):
    x, y = data
    model = mobilenet_v2_block()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    result = kstruct.optimize(model, "ptq", train_data=(x, y), validation_data=(x[:16], y[:16]), verbose=0)
    ptq = result.report.stages[-1]
    assert ptq.backend == keras.backend.backend() == BACKEND
    analysis = tflite_export.analyze(result.tflite)
    assert [t.dtype for t in analysis.inputs] == ["int8"] and [t.dtype for t in analysis.outputs] == ["int8"]
    assert ptq.notes["int8_accuracy"] == pytest.approx(ptq.tflite_accuracy)
    # The probabilities match within a few int8 output steps (1/256 each).
    difference = np.abs(np.asarray(tflite_export.predict(result.tflite, x[:16])) - model.predict(x[:16], verbose=0)).max()
    assert difference <= 0.03 and ptq.max_abs_diff == pytest.approx(difference, abs=1e-6), difference


def test_distill_trains_the_block_from_its_teacher(data):
    from kstruct import distillation

    x, y = data
    teacher = mobilenet_v2_block("teacher")
    teacher.fit(x, y, epochs=1, batch_size=16, verbose=0)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    student = mobilenet_v2_block("student")
    before = [w.copy() for w in student.get_weights()]
    trainer = distillation.distiller(teacher, student, temperature=4.0, alpha=0.5, sample=x[:16])
    history = trainer.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    depthwise = [i for i, w in enumerate(student.weights) if "depthwise" in w.path and "kernel" in w.name]
    assert depthwise and all(np.abs(before[i] - student.get_weights()[i]).max() > 0 for i in depthwise)
    assert all(np.array_equal(a, b) for a, b in zip(teacher_weights, teacher.get_weights()))
