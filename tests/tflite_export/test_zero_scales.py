"""A pruned all-zero weight channel in an int8 file gets a scale LiteRT's XNNPACK delegate accepts."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tflite_export
from tflite_export._zero_scales import nonzero_weight_scales

STEPS, FEATURES, UNITS = 6, 4, 4


def _lstm(zero_recurrent_columns: tuple[int, ...]):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.LSTM(UNITS), keras.layers.Dense(3)])
    kernel, recurrent, bias = model.layers[0].get_weights()
    recurrent[:, list(zero_recurrent_columns)] = 0.0  # a gate of a unit whose recurrent weights were all pruned
    model.layers[0].set_weights([kernel, recurrent, bias])
    return model


@pytest.fixture(scope="module")
def sequences():
    return np.random.default_rng(0).normal(size=(32, STEPS, FEATURES)).astype("float32")


def _weight_scales(blob: bytes) -> list[np.ndarray]:
    interpreter = Interpreter(model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    scales = [t["quantization_parameters"]["scales"] for t in interpreter.get_tensor_details()]
    return [s for s in scales if len(s) > 1]


def test_an_lstm_with_an_all_zero_recurrent_column_converts_to_an_int8_file_that_runs_and_matches(sequences):
    model = _lstm(zero_recurrent_columns=(6, 9))
    blob = tflite_export.convert(model, "int8", representative_data=sequences)
    assert all(np.all(scales > 0) for scales in _weight_scales(blob))
    # The XNNPACK delegate (the default) loads it: with a zero scale it refused the whole file.
    lite = tflite_export.predict(blob, sequences)
    assert np.abs(lite - model.predict(sequences, verbose=0)).max() < 0.05


def test_a_file_without_a_zero_scale_is_returned_byte_for_byte(sequences):
    blob = tflite_export.convert(_lstm(zero_recurrent_columns=()), "int8", representative_data=sequences)
    assert nonzero_weight_scales(blob) is blob
