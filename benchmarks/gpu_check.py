"""The GPU check: does an exported file run fully on LiteRT's GPU accelerator, and agree with the CPU?

Two steps, because the GPU machine has LiteRT but no TensorFlow:

    # here (TensorFlow installed): write the files to check into .gpu/
    python benchmarks/gpu_check.py prepare .gpu
    # on the GPU machine (only ai-edge-litert and numpy needed):
    python benchmarks/gpu_check.py run .gpu

`run` prints one JSON line per .tflite file: fully_accelerated, GPU and CPU median
latency, and the max abs difference between GPU and CPU outputs on one random input.
See docs/deployment.md, "GPU check", for the full recipe.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's packages

import numpy as np  # noqa: E402

import tflite_export  # noqa: E402


def prepare(folder: pathlib.Path) -> None:
    import keras

    from kstruct.models import example_cnn

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    models = {
        "cnn": example_cnn(),
        "mobilenetv2_035_96": keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None),
    }
    for name, model in models.items():
        for target in ("float32", "gpu"):
            path = folder / f"{name}_{target}.tflite"
            path.write_bytes(tflite_export.convert(model, target))
            print(path)


def _gpu_outputs(blob: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    model = CompiledModel.from_buffer(blob, hardware_accel=HardwareAccelerator.GPU | HardwareAccelerator.CPU)
    inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
    inputs[0].write(x)
    model.run_by_index(0, inputs, outputs)
    signature = next(iter(model.get_signature_list()))
    detail = next(iter(model.get_output_tensor_details(signature).values()))
    return outputs[0].read(int(np.prod(detail["shape"])), np.float32).reshape(detail["shape"])


def run(folder: pathlib.Path) -> None:
    for path in sorted(folder.glob("*.tflite")):
        blob = path.read_bytes()
        row = {"file": path.name}
        try:
            gpu = tflite_export.benchmark(blob, runs=50, accelerator="gpu")
            cpu = tflite_export.benchmark(blob, runs=50, accelerator="cpu")
            shape = tflite_export.analyze(blob, gpu_analyzer=False).inputs[0].shape
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            diff = np.abs(_gpu_outputs(blob, x) - tflite_export.predict(blob, x))
            row.update(fully_accelerated=gpu.fully_accelerated, gpu_median_ms=round(gpu.median_ms, 4),
                       cpu_median_ms=round(cpu.median_ms, 4), max_abs_diff_gpu_vs_cpu=float(diff.max()))
        except Exception as e:  # report and go on: one line per file either way
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "run"):
        sys.exit("usage: gpu_check.py prepare|run FOLDER")
    {"prepare": prepare, "run": run}[sys.argv[1]](pathlib.Path(sys.argv[2]))
