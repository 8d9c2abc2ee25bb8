"""A search trial off TensorFlow: trained by Keras on JAX or torch, measured by a conversion in a TensorFlow child.

Each trial's conversion starts a child (`import tensorflow`): about 24 s per trial
on JAX here against 4 s on TensorFlow (README, "Backends"), so one trial is enough.
"""

import keras
import pytest
import tflite_export

from kstruct.search import run, space
from tests.search.conftest import blobs, tiny_cnn
from tests.backends.conftest import BACKEND, off_tensorflow

pytestmark = [pytest.mark.backends, pytest.mark.slow, off_tensorflow]


def test_a_search_trial_trains_off_tensorflow_and_is_measured_as_an_int8_file(tmp_path):
    x, y = blobs()
    result = run(
        space(tiny_cnn()), (x[:180], y[:180]), (x[180:], y[180:]),
        tuner="random", max_trials=1, epochs=1, latency_runs=5, seed=1, target="int8", directory=str(tmp_path),
    )
    (trial,) = result.trials
    assert keras.backend.backend() == BACKEND
    assert trial.trained and trial.feasible
    assert trial.tflite_bytes > 0 and trial.latency_ms > 0 and trial.params > 0
    assert result.best_trial is trial
    best = result.best_model
    assert best is not None and best.count_params() == trial.params
