"""Conversions off TensorFlow: the first starts the TensorFlow child process, the rest reuse it.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/child_conversion.py [--conversions 4]

A tiny CNN built on JAX (or PyTorch) is converted for float32 and int8 in turn; each line is one
`tflite_export.convert` call's wall time. The first pays `import tensorflow` in the child.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversions", type=int, default=4)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tflite_export

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(0).uniform(size=(10, 8, 8, 1)).astype("float32")
    print(f"backend {keras.backend.backend()}")
    for index in range(args.conversions):
        target = ("float32", "int8")[index % 2]
        start = time.perf_counter()
        blob = tflite_export.convert(model, target, representative_data=x)
        print(f"conversion {index + 1} ({target}): {time.perf_counter() - start:.2f} s, {len(blob)} bytes")


if __name__ == "__main__":
    main()
