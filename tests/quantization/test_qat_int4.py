"""`qat(bits=4)`: 4-bit kernels trained, exported by ai-edge-quantizer, read back from the file."""

import keras
import numpy as np
import pytest

import kstruct
import tflite_export
from kstruct.errors import StrategyError
from kstruct.quantization import QuantizeWrapper, quantize
from kstruct.quantization.int4_export import int4_file
from tests import console


def _optimize(model, strategy, digits, target="int4"):
    x_train, y_train, x_test, y_test = digits
    keras.utils.set_random_seed(2)
    return kstruct.optimize(
        model, strategy, train_data=(x_train[:600], y_train[:600]), validation_data=(x_test[:200], y_test[:200]),
        epochs=1, target=target, verbose=0,
    )


def _tflite_layout(kernel) -> np.ndarray:
    kernel = np.asarray(kernel)
    return kernel.T if kernel.ndim == 2 else np.moveaxis(kernel, -1, 0)  # output channels first


def _stored_kernels(qat_model, blob) -> dict[str, tuple[np.ndarray, tflite_export.WeightTensor]]:
    """`{layer: (its fake-quantized kernel, the file's tensor of that shape)}` for each QuantizeWrapper."""
    stored = {w.shape: w for w in tflite_export.quantized_weights(blob)}
    pairs = {}
    for layer in qat_model.layers:
        if isinstance(layer, QuantizeWrapper):
            kernel = _tflite_layout(layer.quantized_weights()[0]["kernel"])
            pairs[layer.layer.name] = (kernel, stored[kernel.shape])
    return pairs


def test_qat_4_bits_file_holds_the_models_fake_quantized_kernels_and_predicts_what_it_predicts(float_cnn, digits):
    result = _optimize(float_cnn, "qat(bits=4)", digits)
    notes = result.report.stages[-1].notes
    assert notes["weight_bits"] == {"conv1": 4, "conv2": 4, "dense1": 4, "classifier": 4}
    for name, (kernel, stored) in _stored_kernels(result.model, result.tflite).items():
        assert stored.dtype == "int4" and stored.scale.size == kernel.shape[0], name  # per output channel
        np.testing.assert_allclose(stored.dequantized(), kernel, rtol=1e-6, atol=1e-8, err_msg=name)
    assert notes["top1_agreement"] >= 0.99
    x, y = digits[2][:200], digits[3][:200]
    assert notes["int4_accuracy"] == pytest.approx(float(np.mean(tflite_export.predict(result.tflite, x).argmax(-1) == y)))
    int8_bytes = len(tflite_export.convert(float_cnn, "int8", digits[0][:100]))
    assert len(result.tflite) < 0.6 * int8_bytes


def test_layers_picks_the_4_bit_layers_and_the_others_keep_8_bit_kernels_and_pruned_zeros(float_cnn, digits):
    result = _optimize(float_cnn, "prune(0.5) + qat(bits=4, layers='conv.*')", digits)
    assert result.report.stages[-1].notes["weight_bits"] == {"conv1": 4, "conv2": 4, "dense1": 8, "classifier": 8}
    pairs = _stored_kernels(result.model, result.tflite)
    assert {name: stored.dtype for name, (_, stored) in pairs.items()} == {
        "conv1": "int4", "conv2": "int4", "dense1": "int8", "classifier": "int8"
    }
    for name, (kernel, stored) in pairs.items():
        np.testing.assert_allclose(stored.dequantized(), kernel, rtol=1e-6, atol=1e-8, err_msg=name)
        assert np.mean(stored.values == 0) >= 0.45, name  # prune(0.5)'s zeros are still zero in the file
    assert pairs["dense1"][1].scale.size == 1  # an 8-bit Dense stays per tensor, as int8 QAT trains it


def test_int4_file_of_a_logits_model_is_within_one_output_step_of_the_qat_model(rng):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(5)], name="logits"
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(256, 12)).astype("float32")
    y = (x[:, :5].argmax(-1)).astype("int32")
    qat_model = quantize(model, bits=4)
    qat_model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    blob = int4_file(qat_model, x[:100])
    step = tflite_export.analyze(blob, gpu_analyzer=False).outputs[0].scale[0]
    difference = np.abs(tflite_export.predict(blob, x) - qat_model.predict(x, verbose=0))
    assert difference.max() <= step * 1.001


def test_qat_bits_options_are_checked_before_training(float_cnn, digits):
    with pytest.raises(StrategyError, match="serves only the targets int4"):
        _optimize(float_cnn, "qat(bits=4)", digits, target="int8")
    with pytest.raises(StrategyError, match="bits=3"):
        kstruct.Strategy.parse("qat(bits=3)")
    with pytest.raises(StrategyError, match="pass bits=4"):
        kstruct.Strategy.parse("qat(layers='conv1')")
    assert str(kstruct.Strategy.parse("qat(bits=4, layers='conv1')")) == "qat(bits=4, layers='conv1')"


def test_a_4_bit_wrapper_round_trips_its_config(float_cnn):
    qat_model = quantize(float_cnn, bits=4, layers=["dense1"])
    wrapper = next(layer for layer in qat_model.layers if isinstance(layer, QuantizeWrapper) and layer.weight_bits == 4)
    assert QuantizeWrapper.from_config(wrapper.get_config()).weight_bits == 4
    with pytest.raises(ValueError, match="matches no 4-bit capable"):
        quantize(float_cnn, bits=4, layers="nothing_here")


def test_kstruct_inspect_shows_the_4_bit_tensors(cnn_int4_file):
    done = console.kstruct("inspect", cnn_int4_file, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "int4 x4" in done.stdout


@pytest.fixture
def cnn_int4_file(float_cnn, digits, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite_export.convert(float_cnn, "int4", digits[0][:100]))
    return path


def test_auto_space_for_int4_keeps_the_layers_4_bits_hurt_most_at_8_bits(float_cnn, digits):
    import keras_tuner

    from kstruct.engine.search_info import SpaceInfo
    from kstruct.quantization import QAT
    from kstruct.quantization.sensitivity import layer_sensitivity

    x = digits[2][:64]
    ranking = [name for name, _ in layer_sensitivity(float_cnn, x, bits=4)]
    assert sorted(ranking) == ["classifier", "conv1", "conv2", "dense1"]
    space = SpaceInfo(model=float_cnn, target="int4", integer_target=False, size_by_gzip=False, array_data=True,
                      max_epochs=1, four_bit_target=True, validation_inputs=x)
    hp = keras_tuner.HyperParameters()
    hp.values.update(quantization="qat", eight_bit_layers=1)
    step = QAT.search_space(hp, space)
    assert step.bits == 4 and sorted(step.layers) == sorted(ranking[1:])  # the most sensitive one keeps 8 bits
    kstruct.Strategy([step]).validate("int4")


def test_clustered_values_each_keep_a_4_bit_level_of_their_own_in_the_file(rng):
    # 15 shared values (7 per sign and zero: all a symmetric 4-bit channel holds), some closer than one step
    # of a channel's grid (max|w| / 7), which plain rounding would merge.
    values = np.array([-1.0, -0.7, -0.4, -0.2, -0.1, -0.04, -0.02, 0.0, 0.01, 0.03, 0.08, 0.2, 0.45, 0.7, 0.9])
    kernel = rng.choice(values, size=(64, 6)).astype("float32")
    kernel[: len(values)] = values[:, None]  # every channel holds all 15
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(6, name="clustered"), keras.layers.Dense(3, name="out")])
    model.get_layer("clustered").set_weights([kernel, np.zeros(6, "float32")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(64, 64)).astype("float32")
    qat_model = quantize(model, bits=4)
    qat_model.fit(x, x[:, :3].argmax(-1), epochs=1, batch_size=16, verbose=0)
    wrapper = qat_model.get_layer("quant_clustered")
    clustered = np.asarray(wrapper.folded_weights()[0]["kernel"]).T  # the snapped kernel, before the grid
    stored = {w.shape: w for w in tflite_export.quantized_weights(int4_file(qat_model, x[:16]))}[clustered.shape]
    assert stored.dtype == "int4"
    assert [len(np.unique(row)) for row in stored.values] == [len(np.unique(row)) for row in clustered] == [15] * 6
    np.testing.assert_allclose(stored.dequantized(), np.asarray(wrapper.quantized_weights()[0]["kernel"]).T, rtol=1e-6, atol=1e-8)
