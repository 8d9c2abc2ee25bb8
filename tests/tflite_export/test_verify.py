"""verify() and evaluate(): Keras vs LiteRT on the same inputs."""

import numpy as np
import pytest

import tflite_export


def test_float32_matches_keras_within_a_thousandth_of_the_output_range(cnn_blob, trained_cnn, mnist):
    _, _, x, y = mnist
    v = tflite_export.verify(cnn_blob("float32"), trained_cnn, x, y)
    assert v.samples == len(x)
    assert v.max_abs_diff < 1e-3 * v.output_range
    assert v.top1_agreement == 1.0
    assert v.keras_accuracy == v.tflite_accuracy


def test_int8_agrees_with_keras_on_most_inputs(cnn_blob, trained_cnn, mnist):
    _, _, x, y = mnist
    v = tflite_export.verify(cnn_blob("int8"), trained_cnn, x, y)
    assert v.keras_accuracy > 0.7  # the fixture model learned something
    assert v.top1_agreement >= 0.95
    assert abs(v.tflite_accuracy - v.keras_accuracy) <= 0.03
    assert v.max_abs_diff > 0  # quantization is visible


def test_evaluate_matches_verify_accuracy(cnn_blob, trained_cnn, mnist):
    _, _, x, y = mnist
    for target in ("float16", "edgetpu"):
        v = tflite_export.verify(cnn_blob(target), trained_cnn, x, y)
        assert tflite_export.evaluate(cnn_blob(target), x, y) == v.tflite_accuracy


def test_keras_accuracy_matches_keras_evaluate(cnn_blob, trained_cnn, mnist):
    _, _, x, y = mnist
    v = tflite_export.verify(cnn_blob("float32"), trained_cnn, x, y)
    _, keras_acc = trained_cnn.evaluate(x, y, verbose=0)
    assert v.keras_accuracy == pytest.approx(keras_acc, abs=1e-6)


def test_evaluate_accepts_one_hot_labels(cnn_blob, mnist):
    _, _, x, y = mnist
    one_hot = np.eye(10, dtype=np.float32)[y]
    assert tflite_export.evaluate(cnn_blob("int8"), x, one_hot) == tflite_export.evaluate(cnn_blob("int8"), x, y)


def test_verify_without_labels_leaves_accuracy_empty(cnn_blob, trained_cnn, mnist):
    d = tflite_export.verify(cnn_blob("dynamic"), trained_cnn, mnist[2][:20]).to_dict()
    assert d["keras_accuracy"] is None and d["tflite_accuracy"] is None
    assert set(d) >= {"top1_agreement", "max_abs_diff", "mean_abs_diff", "max_abs_diff_relative"}


def test_label_count_mismatch_is_an_export_error(cnn_blob, mnist):
    with pytest.raises(tflite_export.ExportError, match="one label per input row"):
        tflite_export.evaluate(cnn_blob("float32"), mnist[2][:5], mnist[3][:4])


@pytest.mark.parametrize("rows", [300, 1030])  # called in batches (the last one partial); past 1024 rows, predict
def test_keras_outputs_are_what_predict_returns_for_dict_inputs_and_two_outputs(rows):
    check_keras_outputs(rows)


def check_keras_outputs(rows: int) -> None:
    """`keras_outputs` equals `predict` on a two-input, two-output model; it calls the model itself up to
    `DIRECT_CALL_ROWS` rows, but on JAX (where `predict` compiles one function, a direct call one per op)
    (also run by tests/backends/test_optimize.py)."""
    import keras

    from tflite_export.verify import DIRECT_CALL_ROWS, keras_outputs

    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((5,), name="b")
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, [keras.layers.Dense(2)(hidden), keras.layers.Dropout(0.5)(hidden)])
    rng = np.random.default_rng(0)
    x = {"a": rng.random((rows, 3), dtype=np.float32), "b": rng.random((rows, 5), dtype=np.float32)}

    outputs = keras_outputs(model, x)
    direct = rows <= DIRECT_CALL_ROWS and keras.backend.backend() != "jax"
    assert (model.predict_function is None) == direct
    expected = model.predict(x, batch_size=256, verbose=0)
    assert isinstance(outputs, list) and len(outputs) == 2
    for got, want in zip(outputs, expected):
        assert isinstance(got, np.ndarray) and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # Dropout inactive: training=False
