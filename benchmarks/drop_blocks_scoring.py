"""What scoring `drop_blocks(1)` costs on deep models, against one fine-tuning epoch on the same data.

    PYTHONPATH=. .venv/bin/python benchmarks/drop_blocks_scoring.py                 # ConvNeXtTiny, NASNetMobile
    PYTHONPATH=. .venv/bin/python benchmarks/drop_blocks_scoring.py convnext_tiny   # one of them

Each model is built untrained (keras.applications, weights=None, 32x32 inputs, 10 classes)
and compiled like a user's (adam, sparse categorical cross-entropy). The same 256 random
rows are the training and the validation data. The step's own `surgery` finds and scores
the candidate blocks (criterion "loss": one gated probe model, one ablation per block on
at most 256 validation rows) and reports the seconds; then one `fit` epoch of the smaller
model on the same rows, as the step's fine-tuning does it, is timed. Target (issue 20,
item 8): scoring costs at most one fine-tuning epoch. Before the bound, scoring rebuilt
and retraced one model per candidate over the whole validation data: 196 s on
ConvNeXtTiny, more than 300 s on NASNetMobile.
"""

from __future__ import annotations

import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROWS = 256
MODELS = {
    "convnext_tiny": lambda: keras.applications.ConvNeXtTiny(input_shape=(32, 32, 3), weights=None, classes=10),
    "nasnet_mobile": lambda: keras.applications.NASNetMobile(input_shape=(32, 32, 3), weights=None, classes=10),
}


def cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} logical cores visible"


def measure(name: str) -> dict:
    from kstruct.engine.training import StepContext, TrainingData
    from kstruct.pruning.blocks_step import DropBlocks

    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(ROWS, 32, 32, 3)).astype("float32"), rng.integers(0, 10, ROWS)
    context = StepContext(train=TrainingData((x, y)), validation=TrainingData((x, y)), epochs=1,
                          compile_source=model, verbose=0)
    start = time.perf_counter()
    smaller, dropped, notes = DropBlocks(1).surgery(model, context)
    surgery = time.perf_counter() - start
    start = time.perf_counter()
    context.fit(smaller, epochs=1)
    epoch = time.perf_counter() - start
    scoring = notes["scoring"]
    return {"model": name, "layers": len(model.layers), "candidates": scoring["candidates"],
            "rows": scoring["samples"], "scoring_s": scoring["seconds"], "surgery_s": round(surgery, 2),
            "epoch_s": round(epoch, 2), "dropped": dropped[0], "ratio": scoring["seconds"] / epoch}


def main(names: list[str]) -> None:
    print(f"CPU: {cpu()}; Keras {keras.__version__}, backend {keras.backend.backend()}")
    print(f"{'model':<14} {'layers':>6} {'blocks':>6} {'rows':>5} {'scoring s':>9} {'surgery s':>9} "
          f"{'1 epoch s':>9} {'scoring/epoch':>13}  dropped")
    for name in names:
        r = measure(name)
        print(f"{r['model']:<14} {r['layers']:>6} {r['candidates']:>6} {r['rows']:>5} {r['scoring_s']:>9.1f} "
              f"{r['surgery_s']:>9.1f} {r['epoch_s']:>9.1f} {r['ratio']:>13.2f}  {r['dropped']}", flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODELS))
