"""benchmark(): positive timings on CPU; bad arguments rejected."""

import pytest

import tflite_export
from tflite_export import ExportError


@pytest.mark.parametrize("target", ["float32", "int8"])
def test_cpu_benchmark_returns_positive_timings(cnn_blob, target):
    r = tflite_export.benchmark(cnn_blob(target), runs=5, warmup=1)
    assert 0 < r.median_ms <= r.p90_ms
    assert r.load_ms > 0 and r.mean_ms > 0
    assert r.accelerator == "cpu" and r.fully_accelerated is None
    assert r.to_dict()["runs"] == 5


# The GPU path (a child process through run_on_gpu) is tested in test_gpu.py.


def test_unknown_accelerator_is_rejected(cnn_blob):
    with pytest.raises(ExportError, match=r"Expected `accelerator` to be one of \('cpu', 'gpu'\). Received: accelerator='npu'"):
        tflite_export.benchmark(cnn_blob("float32"), accelerator="npu")


def test_non_positive_runs_are_rejected(cnn_blob):
    with pytest.raises(ExportError, match=r"Expected `runs` to be an int >= 1. Received: runs=0"):
        tflite_export.benchmark(cnn_blob("float32"), runs=0)
