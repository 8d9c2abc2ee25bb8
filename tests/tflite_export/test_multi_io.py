"""Several inputs and outputs: convert names inputs after keras.Input; predict and verify pair them reliably."""

import keras
import numpy as np
import pytest

import tflite_export

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def two_in_two_out():
    """Inputs whose names sort opposite to their order; outputs a dict."""
    zeta, alpha = keras.Input((8, 8, 1), name="zeta"), keras.Input((3,), name="alpha")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(zeta)), alpha])
    outputs = {"label": keras.layers.Dense(4, activation="softmax", name="label")(joined),
               "size": keras.layers.Dense(1, name="size")(joined)}
    model = keras.Model([zeta, alpha], outputs)
    x = [RNG.random((20, 8, 8, 1)).astype("float32"), RNG.random((20, 3)).astype("float32")]
    return model, x


def test_inputs_keep_their_keras_names_and_calibration_accepts_a_list(two_in_two_out):
    model, x = two_in_two_out
    analysis = tflite_export.analyze(tflite_export.convert(model, "int8", representative_data=x))
    assert sorted((t.name, t.dtype, tuple(t.shape)) for t in analysis.inputs) == [
        ("alpha", "int8", (1, 3)), ("zeta", "int8", (1, 8, 8, 1))
    ]


def test_verify_compares_every_output_by_name(two_in_two_out):
    model, x = two_in_two_out
    blob = tflite_export.convert(model, "float32")
    pairs = tflite_export.paired_outputs(blob, model, x)
    expected = model.predict(x, verbose=0)
    assert list(pairs) == ["label", "size"]
    for name, (ref, lite) in pairs.items():
        assert np.array_equal(ref, expected[name]) and np.allclose(lite, ref, atol=1e-5)
    v = tflite_export.verify(blob, model, x)
    assert set(v.outputs) == {"label", "size"} and v.outputs["size"].max_abs_diff < 1e-5


def test_predict_matches_a_dict_by_input_name_whatever_its_order(two_in_two_out):
    model, x = two_in_two_out
    blob = tflite_export.convert(model, "float32")
    by_list = tflite_export.predict(blob, {"zeta": x[0], "alpha": x[1]})
    by_reversed_dict = tflite_export.predict(blob, {"alpha": x[1], "zeta": x[0]})
    assert all(np.array_equal(a, b) for a, b in zip(by_list, by_reversed_dict))
    with pytest.raises(tflite_export.ExportError) as err:
        tflite_export.predict(blob, {"zeta": x[0], "beta": x[1]})
    assert str(err.value) == "Expected inputs named ['alpha', 'zeta'] (the file's input tensors). Received: ['beta', 'zeta']"


def test_per_pixel_labels_are_scored_per_element():
    outputs = np.zeros((2, 2, 2, 3), "float32")
    outputs[..., 1] = 1.0  # every pixel predicts class 1
    labels = np.array([[[1, 1], [1, 0]], [[2, 1], [1, 1]]])
    from tflite_export.evaluate import top1_accuracy

    assert top1_accuracy(outputs, labels) == 6 / 8
    with pytest.raises(tflite_export.ExportError, match=r"Expected `y` of shape \(2, 2, 2\)"):
        top1_accuracy(outputs, labels[:, :1])
