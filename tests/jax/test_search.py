"""A search trial on JAX: trained by Keras on JAX, measured by a conversion in a TensorFlow child.

Each trial's conversion starts a child (`import tensorflow`): about 24 s per trial
here against 4 s on TensorFlow (README, "Backends"), so one trial is enough.
"""

import pytest

from kstruct.search import run, space
from tests.jax.conftest import requires_jax
from tests.search.conftest import blobs, tiny_cnn

pytestmark = [pytest.mark.jax, pytest.mark.slow, requires_jax]


def test_a_search_trial_trains_on_jax_and_is_measured_as_an_int8_file(tmp_path):
    x, y = blobs()
    result = run(
        space(tiny_cnn()), (x[:180], y[:180]), (x[180:], y[180:]),
        tuner="random", max_trials=1, epochs=1, latency_runs=5, seed=1, target="int8", directory=str(tmp_path),
    )
    (trial,) = result.trials
    assert trial.trained and trial.feasible
    assert trial.tflite_bytes > 0 and trial.latency_ms > 0 and trial.params > 0
    assert result.best_trial is trial
