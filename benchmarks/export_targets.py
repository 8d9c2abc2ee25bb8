"""Size, accuracy and CPU latency of the example CNN for every export target.

Trains the example CNN for 1 epoch on 4,000 MNIST-5k images, converts it for each
target, and prints one JSON line per target: bytes, gzipped bytes, top-1 accuracy
on the 1,000-image test split (run on ai_edge_litert), and median / p90 latency of
one image on 1 CPU thread. The first line is the Keras model itself, for reference.

    python benchmarks/export_targets.py
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import platform
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's packages

import keras  # noqa: E402

import tflite_export  # noqa: E402
from kstruct.data import load_mnist_5k  # noqa: E402
from kstruct.models import compile_for_classification, example_cnn  # noqa: E402


def main(runs: int = 200) -> None:
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_mnist_5k()
    model = compile_for_classification(example_cnn())
    model.fit(x_train[:4000], y_train[:4000], epochs=1, batch_size=64, verbose=0)
    _, keras_acc = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({"target": "keras", "params": model.count_params(), "accuracy": round(float(keras_acc), 4),
                      "cpu": platform.processor() or platform.machine()}), flush=True)
    calibration = x_train[:200]
    for target in tflite_export.TARGETS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", tflite_export.EdgeTpuCpuFallbackWarning)
            data = calibration if tflite_export.TARGET_TABLE[target].needs_data else None
            blob = tflite_export.convert(model, target, data)
        timing = tflite_export.benchmark(blob, threads=1, runs=runs, warmup=10)
        row = {
            "target": target,
            "bytes": len(blob),
            "gzip_bytes": len(gzip.compress(blob, compresslevel=9, mtime=0)),
            "accuracy": round(tflite_export.evaluate(blob, x_test, y_test), 4),
            "median_ms": round(timing.median_ms, 4),
            "p90_ms": round(timing.p90_ms, 4),
            "io_dtype": tflite_export.analyze(blob, gpu_analyzer=False).inputs[0].dtype,
        }
        if caught:
            row["warnings"] = [str(w.message) for w in caught]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
