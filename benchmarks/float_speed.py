"""Where int8 is slower than float on this CPU: the figures behind `ptq(float_by='latency')` (README).

    PYTHONPATH=. .venv/bin/python benchmarks/float_speed.py

Prints, one LiteRT thread, microseconds per invoke (fastest of three medians of 2,000 runs):
1. one Conv2D (3x3) at float32 and int8, by input size and channel count;
2. the example CNN (one epoch on MNIST-5k) all int8, and with `conv1`, `conv2` or both left in float,
   with the int8 file's test accuracy on 400 digits;
3. the example CNN's int8 file after `prune_channels(0.75)` and `(0.9)`: whether fewer parameters help.
"""

from __future__ import annotations

import platform
import time

import keras
import numpy as np

import kstruct
import tflite_export
from kstruct.data import load_mnist_5k
from kstruct.models import compile_for_classification, example_cnn
from tflite_export import runtime


def microseconds(blob: bytes) -> float:
    interpreter = runtime.load_interpreter(blob, threads=1)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    best = float("inf")
    for _ in range(3):
        times = []
        for _ in range(2000):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
        best = min(best, float(np.median(times)) * 1e6)
    return best


def main() -> None:
    print(f"CPU: {platform.processor() or platform.machine()}")
    keras.utils.set_random_seed(0)
    print("1. one Conv2D 3x3: float32 us, int8 us")
    for shape, filters in (((28, 28, 1), 4), ((28, 28, 1), 16), ((28, 28, 8), 16), ((14, 14, 1), 4)):
        model = keras.Sequential([keras.Input(shape), keras.layers.Conv2D(filters, 3)])
        data = np.random.rand(64, *shape).astype("float32")
        print(f"   input {shape}, {filters:2d} filters: "
              + ", ".join(f"{t} {microseconds(tflite_export.convert(model, t, data)):.1f}" for t in ("float32", "int8")))

    (x, y), _ = load_mnist_5k()
    model = compile_for_classification(example_cnn())
    model.fit(x[:1000], y[:1000], epochs=1, verbose=0)
    xs, ys = x[1000:1400], y[1000:1400]
    print(f"2. example CNN (keras accuracy {np.mean(model.predict(xs, verbose=0).argmax(1) == ys):.4f}): "
          f"float32 file {microseconds(tflite_export.convert(model, 'float32')):.1f} us")
    for float_layers in ([], ["conv1"], ["conv2"], ["conv1", "conv2"]):
        blob = tflite_export.convert(model, "int8", x[:200], float_layers=float_layers)
        accuracy = np.mean(np.asarray(tflite_export.predict(blob, xs)).argmax(1) == ys)
        print(f"   int8, float layers {float_layers}: {microseconds(blob):.1f} us, accuracy {accuracy:.4f}")

    print("3. example CNN int8 file after channel pruning (1 epoch of 512 digits)")
    for strategy in ("ptq", "prune_channels(0.75) + ptq", "prune_channels(0.9) + ptq"):
        result = kstruct.optimize(model, strategy, train_data=(x[:512], y[:512]), target="int8", epochs=1, verbose=0)
        print(f"   {strategy}: {result.model.count_params():,} parameters, {microseconds(result.tflite):.1f} us")


if __name__ == "__main__":
    main()
