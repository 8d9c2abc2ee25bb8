"""Latency of a TFLite file on LiteRT: CPU through the Interpreter, GPU through `run_on_gpu`'s child.

Imports only numpy and `ai_edge_litert`, so it runs on a device machine that has
no TensorFlow (see docs/deployment.md, "GPU check").
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from tflite_export import runtime
from tflite_export.errors import ExportError

ACCELERATORS = ("cpu", "gpu")


@dataclasses.dataclass
class BenchmarkResult:
    """Timings in milliseconds of single invocations after warm-up.

    Attributes:
        median_ms / p90_ms / mean_ms: over `runs` invocations.
        load_ms: creating the interpreter (or compiled model) and allocating tensors.
        fully_accelerated: for gpu, whether LiteRT placed every op on the GPU; None for cpu.
        device / software: for gpu, the Vulkan adapter and whether it is a CPU (lavapipe).
        note: for a software adapter, that the latency means nothing for speed.
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    load_ms: float
    runs: int
    threads: int
    accelerator: str
    fully_accelerated: bool | None = None
    device: str | None = None
    software: bool | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _random_input(dtype: Any, shape, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype in (np.int32, np.int64):  # token ids or indices (GATHER): 0 and 1 are valid in any vocabulary
        return rng.integers(0, 2, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
    return rng.uniform(0.0, 1.0, size=shape).astype(dtype)


def _time(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _cpu(blob: bytes, threads: int, rng) -> tuple[float, Any, None]:
    start = time.perf_counter()
    interpreter = runtime.load_interpreter(blob, threads=threads)
    load_ms = (time.perf_counter() - start) * 1e3
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], _random_input(detail["dtype"], detail["shape"], rng))
    return load_ms, interpreter.invoke, None


def _gpu_result(blob: bytes, threads: int, runs: int, warmup: int) -> BenchmarkResult:
    """Times the GPU accelerator through `run_on_gpu`'s child process.

    In the caller's process LiteRT's GPU accelerator segfaults once TensorFlow is imported,
    and some files kill it (SIGILL); the child costs one process start.
    """
    from tflite_export.gpu import run_on_gpu

    verdict = run_on_gpu(blob, runs=runs, warmup=warmup, threads=threads, allow_cpu_fallback=True)
    if not verdict.gpu_times_ms:
        raise ExportError(f"Cannot time the GPU accelerator: {verdict.message}")
    times = verdict.gpu_times_ms
    return BenchmarkResult(
        median_ms=float(np.median(times)),
        p90_ms=float(np.percentile(times, 90)),
        mean_ms=float(np.mean(times)),
        load_ms=float(verdict.load_ms),
        runs=runs,
        threads=threads,
        accelerator="gpu",
        fully_accelerated=verdict.fully_accelerated,
        device=verdict.device,
        software=verdict.software,
        note=(
            f"software Vulkan ({verdict.device}): this latency proves the file runs, it says nothing about GPU speed"
            if verdict.software
            else None
        ),
    )




def benchmark(
    model: bytes | str | os.PathLike, threads: int = 1, runs: int = 50, warmup: int = 5, accelerator: str = "cpu"
) -> BenchmarkResult:
    """Times single invocations of a TFLite file on LiteRT with random inputs.

    Args:
        model: TFLite bytes or a path.
        threads: CPU threads.
        runs / warmup: timed and untimed invocations.
        accelerator: "cpu" (`ai_edge_litert` Interpreter, XNNPACK) or "gpu"
            (`CompiledModel` with the GPU accelerator, CPU fallback for ops it lacks;
            `fully_accelerated` says whether any fell back), run in a child process
            (`run_on_gpu`), so a crash on the GPU cannot take the caller down.

    Raises:
        ExportError: bad arguments, or accelerator="gpu" where no GPU is available.
    """
    if accelerator not in ACCELERATORS:
        raise ExportError(f"Expected `accelerator` to be one of {ACCELERATORS}. Received: accelerator={accelerator!r}")
    for name, value, low in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ExportError(f"Expected `{name}` to be an int >= {low}. Received: {name}={value!r}")
    blob = runtime.read_model(model)
    if accelerator == "gpu":
        return _gpu_result(blob, threads, runs, warmup)
    load_ms, invoke, fully = _cpu(blob, threads, np.random.default_rng(0))
    times = _time(invoke, runs, warmup)
    return BenchmarkResult(
        median_ms=float(np.median(times)),
        p90_ms=float(np.percentile(times, 90)),
        mean_ms=float(np.mean(times)),
        load_ms=load_ms,
        runs=runs,
        threads=threads,
        accelerator=accelerator,
        fully_accelerated=fully,
    )
