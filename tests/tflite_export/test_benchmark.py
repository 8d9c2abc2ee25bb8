"""benchmark(): positive timings on CPU, one clear error for a GPU that is not there."""

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


def _gpu_available(blob) -> bool:
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    try:
        CompiledModel.from_buffer(blob, hardware_accel=HardwareAccelerator.GPU)
        return True
    except RuntimeError:
        return False


def test_gpu_benchmark_without_a_gpu_says_so_in_one_line(cnn_blob):
    blob = cnn_blob("gpu")
    if _gpu_available(blob):
        r = tflite_export.benchmark(blob, runs=5, warmup=1, accelerator="gpu")
        assert r.median_ms > 0 and r.fully_accelerated is not None
        return
    with pytest.raises(ExportError) as info:
        tflite_export.benchmark(blob, runs=1, warmup=0, accelerator="gpu")
    message = str(info.value)
    assert message.startswith("No GPU accelerator is available here") and "\n" not in message


def test_unknown_accelerator_is_rejected(cnn_blob):
    with pytest.raises(ExportError, match=r"Expected `accelerator` to be one of \('cpu', 'gpu'\). Received: accelerator='npu'"):
        tflite_export.benchmark(cnn_blob("float32"), accelerator="npu")


def test_non_positive_runs_are_rejected(cnn_blob):
    with pytest.raises(ExportError, match=r"Expected `runs` to be an int >= 1. Received: runs=0"):
        tflite_export.benchmark(cnn_blob("float32"), runs=0)
