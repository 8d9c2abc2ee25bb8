"""Cluster-preserving QAT: values counted in the int8 kernels read back from the TFLite file."""

import json

import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from kstruct import clustering
from kstruct.quantization import quantize
from tests.conftest import compiled
from tests.console import kstruct as kstruct_cli
from tests.quantization.qat_helpers import weight_tensors


def bn_cnn(name="bn_cnn"):
    return compiled(
        keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="conv"),
                keras.layers.BatchNormalization(name="bn"),
                keras.layers.ReLU(name="relu"),
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(32, activation="relu", name="hidden"),
                keras.layers.Dense(10, activation="softmax", name="out"),
            ],
            name=name,
        )
    )


@pytest.fixture(scope="module")
def digits(small_mnist):
    (x, y), (xt, yt) = small_mnist
    return (x[:320], y[:320]), (xt[:200], yt[:200])  # 200: one flipped argmax is 0.5%


@pytest.fixture(scope="module")
def base(digits):
    (x, y), _ = digits
    model = bn_cnn()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model


def _per_channel_counts(tensor) -> list[int]:
    values = tensor["values"]  # TFLite stores conv filters (out, h, w, in)
    return [np.unique(values[c]).size for c in range(values.shape[0])]


def _optimize(base, digits, strategy):
    (x, y), validation = digits
    return kstruct.optimize(base, strategy, train_data=(x, y), validation_data=validation, epochs=1, verbose=0)


def test_cluster_then_qat_keeps_the_clusters_in_the_int8_file(base, digits):
    result = _optimize(base, digits, "cluster(16) + qat")
    cluster_stage, qat_stage = result.report.stages[1], result.report.stages[2]
    counts = cluster_stage.notes["distinct_values"]
    # At most 16; the entropy-constrained assignment may leave a centroid empty.
    assert set(counts) == {"conv", "hidden", "out"} and all(12 <= n <= 16 for n in counts.values()), counts
    dense = weight_tensors(result.tflite, "FULLY_CONNECTED")
    assert [np.dtype(t["dtype"]).name for t in dense] == ["int8", "int8"]
    # Dense kernels are quantized per tensor: the whole kernel keeps its values.
    assert [np.unique(t["values"]).size for t in dense] == [counts["hidden"], counts["out"]]
    (conv,) = weight_tensors(result.tflite, "CONV_2D")
    # The conv is BN-folded and quantized per channel: each channel keeps at most 16.
    assert max(_per_channel_counts(conv)) <= 16
    assert qat_stage.notes["top1_agreement"] >= 0.995


@pytest.fixture(scope="module")
def stripped_16(base, digits):
    """`base` clustered to 16 values, trained an epoch and stripped (with its declared values), for the
    two tests below; the second changes a copy of it."""
    (x, y), _ = digits
    clustered = clustering.cluster(base, 16)
    clustered.fit(x, y, epochs=1, verbose=0)
    return clustering.strip(clustered)


def test_a_stripped_model_saved_and_loaded_keeps_its_clusters_through_qat(stripped_16, digits, tmp_path):
    """The declaration is a Python attribute, lost in `.keras`; QAT reads the values back from the kernels."""
    (x, y), _ = digits
    stripped = stripped_16
    counts = clustering.distinct_values(stripped)
    stripped.save(tmp_path / "stripped.keras")
    loaded = keras.models.load_model(tmp_path / "stripped.keras")
    assert not any(hasattr(layer, clustering.KERNEL_VALUES_ATTRIBUTE) for layer in loaded.layers)
    qat = quantize(loaded)
    qat.fit(x, y, epochs=1, verbose=0)
    blob = tflite_export.convert(qat, "int8", representative_data=x[:50])
    assert all(n <= 16 for n in counts.values())
    assert [np.unique(t["values"]).size for t in weight_tensors(blob, "FULLY_CONNECTED")] == [counts["hidden"], counts["out"]]
    (conv,) = weight_tensors(blob, "CONV_2D")
    assert max(_per_channel_counts(conv)) <= 16


def test_a_kernel_holding_many_values_is_not_snapped(stripped_16, digits):
    """The control for the test above: the same clustered kernels, nudged apart, scatter under QAT."""
    (x, y), _ = digits
    # A copy: the same weights, without the declared values (a Python attribute clone_model does not copy).
    nudged = compiled(keras.models.clone_model(stripped_16))  # compiled as `base` was
    nudged.set_weights(stripped_16.get_weights())
    rng = np.random.default_rng(0)
    for layer in stripped_16.layers:
        if hasattr(layer, clustering.KERNEL_VALUES_ATTRIBUTE):
            copy = nudged.get_layer(layer.name)
            assert not hasattr(copy, clustering.KERNEL_VALUES_ATTRIBUTE)
            kernel = layer.kernel.numpy()
            copy.kernel.assign(kernel + rng.normal(0, 1e-6, kernel.shape).astype("float32"))
    qat = quantize(nudged)
    qat.fit(x, y, epochs=1, verbose=0)
    blob = tflite_export.convert(qat, "int8", representative_data=x[:50])
    assert [np.unique(t["values"]).size > 16 for t in weight_tensors(blob, "FULLY_CONNECTED")] == [True, True]


def test_per_channel_clusters_survive_bn_folding_and_per_channel_int8(base, digits):
    result = _optimize(base, digits, "cluster(4, per_channel=true) + qat")
    (conv,) = weight_tensors(result.tflite, "CONV_2D")
    counts = _per_channel_counts(conv)
    assert max(counts) <= 4 and len(counts) == 8
    assert result.report.stages[1].notes["distinct_values_per"] == "output channel (largest)"


def test_prune_cluster_qat_keeps_zeros_and_clusters_in_the_int8_file(base, digits):
    result = _optimize(base, digits, "prune(0.75) + cluster(16) + qat")
    counts = result.report.stages[2].notes["distinct_values"]
    dense = weight_tensors(result.tflite, "FULLY_CONNECTED")
    (conv,) = weight_tensors(result.tflite, "CONV_2D")
    for tensor in [*dense, conv]:
        assert np.mean(tensor["values"] == 0) == pytest.approx(0.75, abs=0.01)
    # Zero is one of the at most 16 values (two centroids may round to one int8 value).
    assert counts["hidden"] <= 16 and counts["out"] <= 16, counts
    assert [np.unique(t["values"]).size for t in dense] == [counts["hidden"], counts["out"]]
    assert max(_per_channel_counts(conv)) <= 16


def test_cluster_step_prints_back_in_the_grammar():
    strategy = kstruct.Strategy.parse("cluster(8, init='linear', per_channel=true, epochs=2) + qat")
    assert str(strategy) == "cluster(8, init='linear', per_channel=true, epochs=2) + qat"
    assert str(kstruct.Strategy.parse("cluster")) == "cluster(16)"


@pytest.mark.parametrize(
    "text, message",
    [
        ("cluster(1)", "Expected `n_clusters` to be an integer >= 2. Received: n_clusters=1"),
        ("cluster(16, init='km')", "Expected `init` to be one of ('kmeans++', 'linear', 'density', 'random')"),
    ],
)
def test_bad_cluster_arguments_are_refused_in_the_strategy(text, message):
    with pytest.raises(kstruct.StrategyError) as raised:
        kstruct.Strategy.parse(text)
    assert message in str(raised.value)


def test_qat_model_keeps_its_declared_values_through_keras_saving(base, digits, tmp_path):
    (x, y), _ = digits
    clustered = clustering.cluster(base, 8, per_channel=True)
    qat = quantize(clustering.strip(clustered))
    qat.fit(x, y, epochs=1, verbose=0)
    qat.save(tmp_path / "qat.keras")
    loaded = keras.models.load_model(tmp_path / "qat.keras")
    np.testing.assert_allclose(loaded.predict(x[:50], verbose=0), qat.predict(x[:50], verbose=0), atol=1e-6)
    loaded.fit(x, y, epochs=1, verbose=0)
    blob = tflite_export.convert(loaded, "int8", representative_data=x[:50])
    (conv,) = weight_tensors(blob, "CONV_2D")
    assert max(_per_channel_counts(conv)) <= 8


@pytest.mark.slow
def test_console_script_runs_prune_cluster_qat(base, digits, tmp_path):
    (x, y), (xt, yt) = digits
    base.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y, x_val=xt, y_val=yt)
    done = kstruct_cli("optimize", tmp_path / "model.keras", "--strategy", "prune(0.5) + cluster(8) + qat",
                       "--data", tmp_path / "data.npz", "--epochs", "1", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    cluster_stage = next(stage for stage in report["stages"] if stage["stage"].startswith("cluster"))
    counts = cluster_stage["notes"]["distinct_values"]
    assert set(counts) == {"conv", "hidden", "out"} and all(n <= 8 for n in counts.values()), counts
    blob = (tmp_path / "out" / "model.tflite").read_bytes()
    dense = weight_tensors(blob, "FULLY_CONNECTED")
    assert [np.unique(t["values"]).size for t in dense] == [counts["hidden"], counts["out"]]
    assert [float(np.mean(t["values"] == 0)) for t in dense] == pytest.approx([0.5, 0.5], abs=0.01)


def test_declared_values_train_as_centroids_and_a_declared_zero_stays_zero(digits):
    """As tfmot's CQAT: the values move with training (which concentrates the weights and shrinks the gzip)."""
    (x, y), _ = digits
    rng = np.random.default_rng(0)
    model = compiled(keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="out")]))
    grid = np.array([-0.04, -0.02, 0.0, 0.02, 0.04], "float32")
    model.layers[-1].kernel.assign(rng.choice(grid, size=(784, 10)))
    qat = quantize(model)
    qat.fit(x, y, epochs=2, verbose=0)
    (wrapper,) = [layer for layer in qat.layers if hasattr(layer, "kernel_value_weights")]
    trained = wrapper.kernel_value_weights["kernel"].numpy()
    assert trained[2] == 0.0 and np.abs(trained - grid).max() > 1e-3
    snapped = wrapper.snapped_kernels["kernel"].numpy()
    assert np.unique(snapped).size <= 5 and 0.0 in np.unique(snapped)  # snapped by the last step's values
