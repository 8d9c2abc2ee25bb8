import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from kstruct.pruning import ConstantSparsity, PolynomialDecay

STEPS = [0, 1, 5, 10, 49, 50, 99, 100, 101, 150, 199, 200, 250, 1000]

# tfmot needs tf_keras, which must not share a process with Keras 3: ask a subprocess.
_TFMOT_SCRIPT = """
import json, sys
import tensorflow_model_optimization as tfmot
s = tfmot.sparsity.keras
schedules = {
    "constant": s.ConstantSparsity(0.6, begin_step=10, end_step=200, frequency=10),
    "constant_open": s.ConstantSparsity(0.3, begin_step=0, frequency=50),
    "poly": s.PolynomialDecay(0.1, 0.8, begin_step=0, end_step=200, power=3, frequency=25),
    "poly_late": s.PolynomialDecay(0.0, 0.5, begin_step=50, end_step=150, power=2, frequency=10),
}
steps = json.loads(sys.argv[1])
out = {}
for name, sched in schedules.items():
    rows = []
    for step in steps:
        flag, value = sched(step)
        rows.append([bool(flag.numpy()), float(value.numpy())])
    out[name] = rows
print(json.dumps(out))
"""

OURS = {
    "constant": ConstantSparsity(0.6, begin_step=10, end_step=200, frequency=10),
    "constant_open": ConstantSparsity(0.3, begin_step=0, frequency=50),
    "poly": PolynomialDecay(0.1, 0.8, begin_step=0, end_step=200, power=3, frequency=25),
    "poly_late": PolynomialDecay(0.0, 0.5, begin_step=50, end_step=150, power=2, frequency=10),
}


@pytest.fixture(scope="module")
def tfmot_values():
    done = subprocess.run(
        [sys.executable, "-c", _TFMOT_SCRIPT, json.dumps(STEPS)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(OURS))
def test_schedules_match_tfmot_at_sampled_steps(name, tfmot_values):
    for step, (flag, value) in zip(STEPS, tfmot_values[name]):
        our_flag, our_value = OURS[name](step)
        assert bool(our_flag) == flag, f"{name} step {step}"
        assert float(our_value) == pytest.approx(value, abs=1e-6), f"{name} step {step}"


@pytest.mark.parametrize("name", sorted(OURS))
def test_schedule_config_round_trip(name):
    schedule = OURS[name]
    again = type(schedule).from_config(schedule.get_config())
    assert again == schedule
    serialized = keras.saving.serialize_keras_object(schedule)
    assert keras.saving.deserialize_keras_object(serialized) == schedule


def test_polynomial_decay_reaches_final_sparsity_at_end_step():
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=100, frequency=10)
    values = [float(schedule(step)[1]) for step in (0, 50, 100, 500)]
    assert values[0] == 0.0
    assert 0.0 < values[1] < 0.75
    assert values[2] == pytest.approx(0.75) and values[3] == pytest.approx(0.75)
    assert np.all(np.diff(values) >= 0)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ConstantSparsity(1.0), "Expected `target_sparsity` in [0, 1). Received: target_sparsity=1.0"),
        (lambda: ConstantSparsity(0.5, begin_step=-1), "Expected `begin_step` >= 0. Received: begin_step=-1"),
        (lambda: PolynomialDecay(0.0, 0.5, begin_step=0, end_step=-1), "this schedule needs an end"),
        (lambda: PolynomialDecay(0.0, 0.5, begin_step=10, end_step=5), "Received: begin_step=10, end_step=5"),
        (lambda: ConstantSparsity(0.5, frequency=0), "Expected `frequency` > 0. Received: frequency=0"),
    ],
)
def test_schedule_rejects_bad_arguments(build, message):
    with pytest.raises(ValueError) as err:
        build()
    assert message in str(err.value)


@pytest.mark.parametrize("name", sorted(OURS))
def test_sparsity_after_matches_the_mask_the_tensor_schedule_leaves(name):
    """`sparsity_after(n)` (plain Python, before training) is the sparsity of the last update in steps 0..n-1."""
    schedule = OURS[name]
    for steps in (1, 2, 11, 60, 151, 260):
        last = None
        for step in range(steps):
            update, value = schedule(step)
            if bool(update):
                last = float(value)
        after = schedule.sparsity_after(steps)
        assert (after is None) == (last is None), (name, steps)
        assert after == pytest.approx(last, abs=1e-6), (name, steps)
