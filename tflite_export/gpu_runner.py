"""The child side of `run_on_gpu`: runs one .tflite file on LiteRT's CPU and GPU accelerators.

Standalone on purpose: it imports only numpy and `ai_edge_litert`, never TensorFlow or
kstruct, because (1) LiteRT's GPU accelerator segfaults in a process that has imported
TensorFlow, (2) some files kill the process (CUMSUM: SIGILL), so it must not be the
caller's, and (3) a GPU machine may have LiteRT but no TensorFlow. Run it as

    python gpu_runner.py MODEL.tflite [--runs N] [--warmup N] [--threads N] [--fallback]

It prints JSON lines on stdout, each prefixed with `MARK`: `{"stage": ...}` before each
step (so a crash can be placed) and a final `{"result": {...}}`. LiteRT's own log goes to
stderr; the parent reads the device name and the refused ops from there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

MARK = "@@gpu_runner "
EVIDENCE_VALUES = 8  # first values of the worst output, shown in a wrong-output verdict


def _emit(**record) -> None:
    print(MARK + json.dumps(record), flush=True)


def _compile(path: str, accelerators, threads: int):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.options import CpuOptions, GpuOptions, Options

    options = Options(
        hardware_accelerators=accelerators,
        cpu_options=CpuOptions(num_threads=threads),
        gpu_options=GpuOptions(enforce_f32=True),  # fp32 math, so the comparison with the CPU is tight
    )
    return CompiledModel.from_file(path, options=options)


def _random_inputs(model, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    signature = next(iter(model.get_signature_list()))
    arrays = []
    for detail in model.get_input_tensor_details(signature).values():
        dtype, shape = np.dtype(detail["dtype"]), [max(int(d), 1) for d in detail["shape"]]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arrays.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype))
        else:
            arrays.append(rng.uniform(0.0, 1.0, size=shape).astype(dtype))
    return arrays


def _run(model, arrays: list[np.ndarray], runs: int, warmup: int) -> tuple[list[np.ndarray], list[float]]:
    """Writes `arrays`, invokes warmup + runs times, returns the outputs and per-run milliseconds."""
    signature = next(iter(model.get_signature_list()))
    inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
    for buffer, array in zip(inputs, arrays):
        buffer.write(array)
    details = list(model.get_output_tensor_details(signature).values())
    shapes = [[max(int(d), 1) for d in detail["shape"]] for detail in details]

    def read() -> list[np.ndarray]:
        return [
            buffer.read(int(np.prod(shape)), np.dtype(detail["dtype"])).reshape(shape)
            for buffer, detail, shape in zip(outputs, details, shapes)
        ]

    times = []
    for i in range(warmup + max(runs, 1)):
        start = time.perf_counter()
        model.run_by_index(0, inputs, outputs)
        results = read()  # a GPU run may return before it finishes: reading the outputs waits for it
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return results, times


def _compare(cpu: list[np.ndarray], gpu: list[np.ndarray]) -> dict:
    diffs = [float(np.max(np.abs(c.astype(np.float64) - g.astype(np.float64)), initial=0.0)) for c, g in zip(cpu, gpu)]
    worst = int(np.argmax(diffs)) if diffs else 0
    scale = max((float(np.max(np.abs(c.astype(np.float64)), initial=0.0)) for c in cpu), default=0.0)
    return {
        "max_abs_diff": max(diffs, default=0.0),
        "output_scale": scale,
        "integer_outputs": all(np.issubdtype(c.dtype, np.integer) for c in cpu),
        "worst_output": worst,
        "cpu_values": cpu[worst].ravel()[:EVIDENCE_VALUES].tolist() if cpu else [],
        "gpu_values": gpu[worst].ravel()[:EVIDENCE_VALUES].tolist() if gpu else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fallback", action="store_true", help="let ops the GPU lacks run on the CPU")
    args = parser.parse_args(argv)
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    _emit(stage="cpu")
    cpu_model = _compile(args.model, HardwareAccelerator.CPU, args.threads)
    arrays = _random_inputs(cpu_model, args.seed)
    cpu_out, cpu_times = _run(cpu_model, arrays, args.runs, args.warmup)

    _emit(stage="gpu_compile")
    accelerators = HardwareAccelerator.GPU | (HardwareAccelerator.CPU if args.fallback else 0)
    start = time.perf_counter()
    try:
        gpu_model = _compile(args.model, accelerators, args.threads)
    except RuntimeError as e:  # refused, or no Vulkan adapter: the parent tells which from the log
        _emit(result={"compiled": False, "error": " ".join(str(e).split())})
        return 0
    load_ms = (time.perf_counter() - start) * 1e3
    fully = gpu_model.is_fully_accelerated()

    _emit(stage="gpu_run")
    gpu_out, gpu_times = _run(gpu_model, arrays, args.runs, args.warmup)
    _emit(result={
        "compiled": True,
        "fully_accelerated": bool(fully),
        "load_ms": load_ms,
        "gpu_times_ms": gpu_times,
        "cpu_times_ms": cpu_times,
        **_compare(cpu_out, gpu_out),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
