"""Training throughput (images/s) of plain fit, `prune` and QAT, per Keras backend, against tfmot.

The example CNN on MNIST-5k's training images (tiled `--repeat` times so that an epoch is long
enough to time), batch size `--batch-size`. Each engine runs in its own child process, because a
Keras backend is chosen once per process and tfmot needs legacy tf_keras:

- `tensorflow`, `jax`: Keras 3 with that backend; kstruct's `pruning.prune` (PolynomialDecay to
  75%) and `quantization.quantize` (QAT), both plain `fit` with no callback;
- `tfmot`: tensorflow-model-optimization 0.8.1 on tf_keras: `prune_low_magnitude` with its
  `UpdatePruningStep` callback, and `quantize_model`.

Throughput is measured over `--epochs` epochs after one warm-up epoch (which pays for tracing
and compilation), so it is the steady-state rate. Ratios are meaningful only within one run on one
machine: the script prints the CPU model and its vector-instruction flags (and the accelerator, if
JAX sees one).

Run: `python benchmarks/backends.py` (all engines), or on a GPU machine without TensorFlow:
`python benchmarks/backends.py --engines jax --batch-size 1024 --repeat 20`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("plain", "prune", "qat")


def cpu_description() -> str:
    """The CPU model and the flags that decide int8 and float speed (AVX2, AVX-512, VNNI, AMX)."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"]
    present = [flag for flag in wanted if flag in flags]
    return f"{model}; {os.cpu_count()} logical CPUs; flags: {' '.join(present) or 'none of ' + ' '.join(wanted)}"


def _images_per_second(fit, images: int, epochs: int) -> float:
    fit(1)  # warm-up: tracing and compilation
    started = time.perf_counter()
    fit(epochs)
    return images * epochs / (time.perf_counter() - started)


def keras3_worker(settings: dict) -> dict:
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from kstruct import pruning, quantization
    from kstruct.data import load_mnist_5k
    from kstruct.models import example_cnn

    (x, y), _ = load_mnist_5k()
    x, y = np.tile(x, (settings["repeat"], 1, 1, 1)), np.tile(y, settings["repeat"])
    batch, epochs = settings["batch_size"], settings["epochs"]
    steps = len(x) // batch

    def compiled(model):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    keras.utils.set_random_seed(0)
    builders = {
        "plain": lambda: example_cnn(),
        "prune": lambda: pruning.prune(
            example_cnn(), pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=steps * (epochs + 1), frequency=max(1, steps // 4))
        ),
        "qat": lambda: quantization.quantize(example_cnn()),
    }
    rates = {}
    for kind in settings["kinds"]:
        model = compiled(builders[kind]())
        fit = lambda n, model=model: model.fit(x, y, batch_size=batch, epochs=n, verbose=0, shuffle=True)
        rates[kind] = _images_per_second(fit, len(x), epochs)
    devices = []
    if keras.backend.backend() == "jax":
        import jax

        devices = sorted({f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()})
    return {"engine": keras.backend.backend(), "keras": keras.__version__, "devices": devices, **rates}


def tfmot_worker(settings: dict) -> dict:
    """Runs in a child process with TF_USE_LEGACY_KERAS=1."""
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT))
    from _tfmot_prune import compiled, example_cnn

    from kstruct.data import load_mnist_5k

    (x, y), _ = load_mnist_5k()
    x, y = np.tile(x, (settings["repeat"], 1, 1, 1)), np.tile(y, settings["repeat"])
    batch, epochs = settings["batch_size"], settings["epochs"]
    steps = len(x) // batch
    keras.utils.set_random_seed(0)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=steps * (epochs + 1), frequency=max(1, steps // 4))
    builders = {
        "plain": (lambda: example_cnn(), []),
        "prune": (lambda: tfmot.sparsity.keras.prune_low_magnitude(example_cnn(), pruning_schedule=schedule),
                  [tfmot.sparsity.keras.UpdatePruningStep()]),
        "qat": (lambda: tfmot.quantization.keras.quantize_model(example_cnn()), []),
    }
    rates = {}
    for kind in settings["kinds"]:
        build, callbacks = builders[kind]
        model = compiled(build())
        fit = lambda n, model=model, callbacks=callbacks: model.fit(
            x, y, batch_size=batch, epochs=n, verbose=0, shuffle=True, callbacks=callbacks
        )
        rates[kind] = _images_per_second(fit, len(x), epochs)
    return {"engine": "tfmot", "keras": keras.__version__, "devices": [], **rates}


def run_engine(engine: str, settings: dict) -> dict:
    env = dict(os.environ)
    if engine == "tfmot":
        env["TF_USE_LEGACY_KERAS"] = "1"
    else:
        env["KERAS_BACKEND"] = engine
    done = subprocess.run(
        [sys.executable, __file__, "--worker", engine, "--settings", json.dumps(settings)],
        env=env, capture_output=True, text=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"engine": engine, "error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="tensorflow,jax,tfmot")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--repeat", type=int, default=2, help="tile MNIST-5k's training images this many times")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        settings = json.loads(args.settings)
        worker = tfmot_worker if args.worker == "tfmot" else keras3_worker
        print(json.dumps(worker(settings)), flush=True)
        return

    settings = {"batch_size": args.batch_size, "epochs": args.epochs, "repeat": args.repeat,
                "kinds": args.kinds.split(",")}
    print(f"CPU: {cpu_description()}")
    print(f"example CNN, MNIST-5k's training images x{args.repeat} an epoch, batch {args.batch_size}, "
          f"{args.epochs} timed epochs after 1 warm-up; images/s (higher is better)")
    rows = [run_engine(engine, settings) for engine in args.engines.split(",")]
    print(f"{'engine':<12}" + "".join(f"{kind:>12}" for kind in settings["kinds"]) + "   devices")
    for row in rows:
        if "error" in row:
            print(f"{row['engine']:<12}  failed: {row['error']}")
            continue
        rates = "".join(f"{row.get(kind, float('nan')):>12,.0f}" for kind in settings["kinds"])
        print(f"{row['engine']:<12}{rates}   {' '.join(row['devices']) or 'cpu'}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
