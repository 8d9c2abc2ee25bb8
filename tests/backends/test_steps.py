"""Every step of the strategy grammar has a test that trains it off TensorFlow (on JAX and on torch).

A step registered later: the registry test fails until a test in tests/backends runs it and names it below.
"""

from pathlib import Path

import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from tests.conftest import compiled, tiny_cnn
from tests.backends.conftest import BACKEND, off_tensorflow

pytestmark = pytest.mark.backends

# Step name -> the test that runs it on JAX and on torch.
CHECKED = {
    "prune": "test_optimize.py::test_every_stage_trains_off_tensorflow_and_the_report_says_so",
    "qat": "test_optimize.py::test_int8_file_converted_off_tensorflow_matches_the_keras_model_off_tensorflow",
    "ptq": "test_mobilenet_block.py::test_ptq_through_optimize_calibrates_the_int8_file_in_the_tensorflow_child",
    "search": "test_search.py::test_a_search_trial_trains_off_tensorflow_and_is_measured_as_an_int8_file",
    "cluster": "test_mobilenet_block.py::test_cluster_then_cluster_preserving_qat_keeps_the_depthwise_values",
    "distill": "test_mobilenet_block.py::test_distill_trains_the_block_from_its_teacher",
    "prune_channels": "test_steps.py::test_prune_channels_taylor_criterion_trains_off_tensorflow_and_strips_exactly",
    "drop_blocks": "test_mobilenet_block.py::test_drop_blocks_removes_one_inverted_residual_block",
    "factorize": "test_steps.py::test_factorize_is_exact_at_full_rank_and_trains_off_tensorflow",
    "auto": "test_steps.py::test_auto_trains_its_trials_off_tensorflow_and_meets_a_params_budget",
}


def test_every_registered_step_is_checked_off_tensorflow():
    unchecked = sorted(set(kstruct.KNOWN_STEPS) - set(CHECKED))
    assert not unchecked, f"steps without a test off TensorFlow: {unchecked}; add one to tests/backends and name it in CHECKED"
    here = Path(__file__).parent
    for where in CHECKED.values():  # each named test exists
        module, test = where.split("::")
        assert f"def {test}(" in (here / module).read_text(), where





@off_tensorflow
def test_prune_channels_taylor_criterion_trains_off_tensorflow_and_strips_exactly():
    from kstruct.pruning import prune_channels, strip
    from kstruct.pruning.channels_criteria import gradients
    from tests.graph import zoo

    model = zoo.resnet_style()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # zoo models end in logits
    model.compile(optimizer="adam", loss=loss)
    x, y = zoo.sample(model, 16), np.arange(16) % 3
    # The gradient taylor ranks by is the true one: d mean CE / d output bias = mean(softmax(logits) - onehot(y)).
    logits = keras.ops.convert_to_numpy(model(x))
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    expected = (probabilities - np.eye(3)[y]).mean(0)
    np.testing.assert_allclose(gradients(model, x, y, loss)["out/bias"], expected, atol=1e-6)

    masked = prune_channels(model, 0.5, criterion="taylor", data=(x, y))
    masked.fit(x, y, epochs=1, batch_size=8, verbose=0)
    stripped = strip(masked)
    assert stripped.get_layer("stem").filters == 4
    assert np.max(np.abs(masked.predict(x, verbose=0) - stripped.predict(x, verbose=0))) <= 1e-5



@off_tensorflow
def test_factorize_is_exact_at_full_rank_and_trains_off_tensorflow(small_mnist):
    from kstruct import factorize
    from tests.factorize.test_decompose import _every_kind_inputs, every_kind

    # Every form (spatial split, Tucker-2 with strides and "same" padding, causal Conv1D, masked Embedding)
    # computes the original on this backend's convolutions.
    model = every_kind()
    x = _every_kind_inputs(np.random.default_rng(0))
    full = factorize.decompose(model, rank=1.0, only_if_cheaper=False, layers=lambda layer: True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(full(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-4)
    # A truncated one trains with fit.
    (digits, labels), _ = small_mnist
    small = compiled(factorize.decompose(tiny_cnn(), rank=0.5))
    before = [w.copy() for w in small.get_weights()]
    history = small.fit(digits[:128], labels[:128], epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.abs(a - b).max() > 0 for a, b in zip(before, small.get_weights()))


@off_tensorflow
def test_auto_trains_its_trials_off_tensorflow_and_meets_a_params_budget(tmp_path):
    from tests.search.conftest import blobs
    from tests.search.conftest import tiny_cnn as search_cnn

    keras.utils.set_random_seed(0)
    x, y = blobs(n=240)
    model = search_cnn()
    model.fit(x[:200], y[:200], epochs=2, verbose=0)
    limit = int(model.count_params() * 0.6)
    result = kstruct.optimize(
        model, kstruct.Budget(params=limit, max_accuracy_drop=0.5, trials=2, epochs=1, tuner="random"),
        train_data=(x[:200], y[:200]), validation_data=(x[200:], y[200:]), target="float32", verbose=0,
    )
    chosen = result.report.stages[-1]
    assert chosen.backend == BACKEND and chosen.params <= limit
    assert len(result.trials) == 2 and any(row["status"] == "feasible" and row["epochs"] >= 1 for row in result.trials)
    assert np.asarray(tflite_export.predict(result.tflite, x[200:204])).shape == (4, 3)
