"""Every step of the strategy grammar has a test that trains it on JAX.

The hook for the steps still being built (cluster, distill): once one is registered,
this test fails until a test in tests/jax runs it on JAX and names it below.
"""

import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from tests.conftest import compiled, tiny_cnn
from tests.jax.conftest import requires_jax

pytestmark = pytest.mark.jax

# Step name -> the test that runs it on JAX.
JAX_CHECKED = {
    "prune": "test_optimize.py::test_every_stage_trains_on_jax_and_the_report_says_so",
    "qat": "test_optimize.py::test_int8_file_converted_from_jax_matches_the_keras_model_on_jax",
    "ptq": "test_steps.py::test_ptq_on_jax_calibrates_the_int8_file_in_the_tensorflow_child",
    "search": "test_search.py::test_a_search_trial_trains_on_jax_and_is_measured_as_an_int8_file",
}


def test_every_registered_step_is_checked_on_jax():
    unchecked = sorted(set(kstruct.KNOWN_STEPS) - set(JAX_CHECKED))
    assert not unchecked, f"steps without a test on JAX: {unchecked}; add one to tests/jax and name it in JAX_CHECKED"


@requires_jax
@pytest.mark.slow
def test_ptq_on_jax_calibrates_the_int8_file_in_the_tensorflow_child(small_mnist):
    (x, y), (xt, yt) = small_mnist
    model = compiled(tiny_cnn())
    model.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    result = kstruct.optimize(model, "ptq", train_data=(x[:256], y[:256]), validation_data=(xt[:128], yt[:128]), verbose=0)
    original, ptq = result.report.stages
    assert ptq.backend == keras.backend.backend() == "jax"
    assert ptq.notes["int8_accuracy"] == pytest.approx(ptq.tflite_accuracy)
    # One epoch on 256 digits leaves near-ties in the softmax, so top-1 agreement says little;
    # the probabilities themselves must match within a few int8 output steps (1/256 each).
    keras_probabilities = np.asarray(model.predict(xt[:128], verbose=0))
    difference = np.abs(keras_probabilities - tflite_export.predict(result.tflite, xt[:128])).max()
    assert difference <= 0.02 and ptq.max_abs_diff == pytest.approx(difference), difference

