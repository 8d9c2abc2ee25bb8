"""The CPU two Keras habits cost kstruct on TensorFlow, with and without the way around each.

1. `fit` traces its train step twice when the step creates the optimizer's and metrics' variables
   (Keras defers them to the first trace outside a distribution strategy); kstruct builds them
   first (`kstruct.engine.training.build_training_state`).
2. `predict` traces a graph for every new model; on the few hundred rows a file is checked on,
   kstruct calls the model in batches instead (`tflite_export.verify.keras_outputs`).

For each model (the example CNN and MobileNetV2 at alpha 0.35 on 32x32 inputs, both untrained),
prints one JSON line per measure: CPU seconds (process time) of a fresh model's one-epoch fit of
8 batches of 32 rows, and of its outputs on 400 rows; each the median of `--repeat` fresh models.

    python benchmarks/keras_overheads.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's packages

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.backends import cpu_description  # noqa: E402  (one way to print the CPU)
from kstruct.engine.training import build_training_state  # noqa: E402
from kstruct.models import compile_for_classification, example_cnn  # noqa: E402
from tflite_export.verify import keras_outputs  # noqa: E402


def _models() -> dict:
    return {
        "example_cnn": ((28, 28, 1), example_cnn),
        "mobilenet_v2_0.35": ((32, 32, 3), lambda: keras.applications.MobileNetV2(
            input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)),
    }


def _cpu(function) -> float:
    start = time.process_time()
    function()
    return time.process_time() - start


def main(repeat: int) -> None:
    rng = np.random.default_rng(0)
    cpu = cpu_description()
    for name, (shape, make) in _models().items():
        x = rng.random((400, *shape), dtype=np.float32)
        y = rng.integers(0, 10, 400)
        figures = {"fit, Keras": [], "fit, variables built first": [], "outputs, predict": [],
                   "outputs, keras_outputs": []}
        for _ in range(repeat):
            for built_first in (False, True):
                model = compile_for_classification(make())
                if built_first:
                    figures["fit, variables built first"].append(_cpu(lambda: (
                        build_training_state(model, x[:32], y[:32]),
                        model.fit(x[:256], y[:256], batch_size=32, epochs=1, verbose=0))))
                else:
                    figures["fit, Keras"].append(_cpu(lambda: model.fit(x[:256], y[:256], batch_size=32, epochs=1,
                                                                         verbose=0)))
            model = make()
            figures["outputs, predict"].append(_cpu(lambda: model.predict(x, batch_size=256, verbose=0)))
            model = make()
            figures["outputs, keras_outputs"].append(_cpu(lambda: keras_outputs(model, x)))
        for measure, values in figures.items():
            print(json.dumps({"model": name, "measure": measure, "cpu_s": round(statistics.median(values), 3),
                              "repeat": repeat, "cpu": cpu}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    main(parser.parse_args().repeat)
