"""The GPU op table follows the runtime: ops measured to fail when run are refused by `check`.

The measurement is `benchmarks/gpu_op_table.py`; its device tests skip (and say why) without a
Vulkan device, unless KSTRUCT_REQUIRE_GPU_TESTS=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import pytest

import tflite_export
from tflite_export import CompatibilityError, targets
from tests.console import python_module

ROOT = pathlib.Path(__file__).resolve().parents[2]
CUMSUM_PROBLEM = "op CUMSUM is on the GPU delegate's op table but fails when run: " + targets.GPU_OPS_FAILING_AT_RUN["CUMSUM"]


def _one_op(fn, shape) -> bytes:
    """`fn` on a static float32 input, through TF's converter (no op table in the way)."""
    import tensorflow as tf

    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert()


@pytest.fixture(scope="module")
def cumsum_blob() -> bytes:
    import tensorflow as tf

    return _one_op(lambda x: tf.cumsum(x, axis=-1), (1, 4, 4, 4))


@pytest.fixture(scope="module")
def device():
    """Skips (or, in CI, fails) the device tests when no Vulkan device exists."""
    import tensorflow as tf

    verdict = tflite_export.run_on_gpu(_one_op(tf.abs, (1, 4, 4, 4)), runs=1, warmup=0)
    if verdict.status == "no_device":
        reason = f"GPU op-table tests skipped: {verdict.message}"
        if os.environ.get("KSTRUCT_REQUIRE_GPU_TESTS") == "1":
            pytest.fail(f"KSTRUCT_REQUIRE_GPU_TESTS=1 but {reason}")
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    assert verdict.ok, verdict.message
    return verdict


def test_failing_ops_are_on_the_table_the_runtime_overrules():
    assert set(targets.GPU_OPS_FAILING_AT_RUN) <= targets.GPU_OPS


def test_check_gpu_refuses_cumsum_with_the_measured_reason(cumsum_blob):
    result = tflite_export.check(cumsum_blob, "gpu")
    assert tflite_export.analyze(cumsum_blob, gpu_analyzer=False).ops == ["CUMSUM"]
    assert not result.ok
    assert result.unsupported_ops == ["CUMSUM"]
    assert result.problems == [CUMSUM_PROBLEM]


def test_check_gpu_still_passes_a_table_op_that_runs():
    import tensorflow as tf

    result = tflite_export.check(_one_op(tf.abs, (1, 4, 4, 4)), "gpu")
    assert result.ok and result.problems == [] and result.unsupported_ops == []


def test_convert_gpu_refuses_a_keras_cumsum_model_and_leaves_it_alone():
    import keras

    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: keras.ops.cumsum(x, axis=-1))(inputs))
    x = np.ones((1, 4, 4, 8), "float32")
    before = model.predict(x, verbose=0)
    with pytest.raises(CompatibilityError) as raised:
        tflite_export.convert(model, "gpu")
    assert str(raised.value) == f"The converted file does not suit target='gpu': {CUMSUM_PROBLEM}"
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert tflite_export.convert(model, "float32")  # the other targets still take it


def test_the_run_confirms_cumsum_fails(device, cumsum_blob):
    verdict = tflite_export.run_on_gpu(cumsum_blob, runs=1, warmup=0)
    assert verdict.status == "crashed" and verdict.signal == "SIGILL", verdict.message


def test_benchmark_script_prints_only_the_disagreements(device):
    """ABS agrees with the table; CUMSUM over [1, 64] (wrong values) and ADD_N of 3 (refused) do not.

    The script runs start to end in a process of its own, forked from the test zygote (tests/console.py),
    which has TensorFlow imported already."""
    done = python_module("benchmarks.gpu_op_table", "--ops", "ABS,CUMSUM_2D,ADD_N", "--disagreements", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [(r[0], r[2], r[3], r[4]) for r in rows[1:]] == [
        ("| CUMSUM_2D", "on table", "refuse", "wrong_output"),
        ("| ADD_N", "on table", "pass", "not_accelerated"),
    ]
    assert "ADD_N only supports 2 inputs" in rows[2][5]
    assert "2 disagreements in 3 files" in done.stdout
