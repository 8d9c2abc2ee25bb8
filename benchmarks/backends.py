"""Training throughput (images/s) of plain fit, `prune` and QAT, per Keras backend, against tfmot.

The example CNN on MNIST-5k's training images (tiled `--repeat` times so that an epoch is long
enough to time), batch size `--batch-size`. Each engine runs in its own child process, because a
Keras backend is chosen once per process and tfmot needs legacy tf_keras:

- `tensorflow`, `jax`, `torch`: Keras 3 with that backend; kstruct's `pruning.prune`
  (PolynomialDecay to 75%) and `quantization.quantize` (QAT), both plain `fit` with no callback;
- `tfmot`: tensorflow-model-optimization 0.8.1 on tf_keras: `prune_low_magnitude` with its
  `UpdatePruningStep` callback, and `quantize_model`;
- `paired` (the default's first): kstruct on TensorFlow and tfmot in one process (both on one
  TensorFlow runtime), every model timed in turn for `--rounds` turns, so the two are compared
  under the same load. On a shared machine, separate processes differ by 20-40% run to run.

Throughput is measured over `--epochs` epochs after one warm-up epoch (which pays for tracing
and compilation), so it is the steady-state rate. Ratios are meaningful only within one run on one
machine: the script prints the CPU model and its vector-instruction flags (and the accelerator, if
JAX sees one).

Run: `python benchmarks/backends.py` (paired, JAX and torch), or on a GPU machine without TensorFlow:
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


def _mask_sparsity(model) -> float:
    """Fraction of zeros over every pruning mask: what the prune schedule reached by the end of fit.

    Both kstruct's PruneWrapper and tfmot's wrapper keep a variable named "mask".
    """
    masks = [v.numpy() for v in model.weights if v.name.split("/")[-1].split(":")[0] == "mask"]
    return float(1.0 - sum(m.sum() for m in masks) / sum(m.size for m in masks))


def _time_kinds(builders: dict, compile_model, fit_model, settings: dict, images: int) -> dict:
    """{"<kind>@<steps per execution>": images/s, "prune@<n> sparsity": ...} for every kind and setting."""
    rates = {}
    for per_call in settings["steps_per_execution"]:
        for kind in settings["kinds"]:
            model = compile_model(builders[kind](), per_call)
            rates[f"{kind}@{per_call}"] = _images_per_second(lambda n, model=model, kind=kind: fit_model(model, kind, n), images, settings["epochs"])
            if kind == "prune":
                rates[f"prune@{per_call} sparsity"] = _mask_sparsity(model)
    return rates


def _mnist(settings: dict):
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from kstruct.data import load_mnist_5k

    (x, y), _ = load_mnist_5k()
    return np.tile(x, (settings["repeat"], 1, 1, 1)), np.tile(y, settings["repeat"])


def _compiled(model, per_call):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=per_call)
    return model


def keras3_setup(settings: dict, x, y):
    """kstruct's builders and fit on Keras 3 (the process's KERAS_BACKEND)."""
    import keras

    from kstruct import pruning, quantization
    from kstruct.models import example_cnn

    batch, epochs, rounds = settings["batch_size"], settings["epochs"], settings.get("paired_rounds", 1)
    steps = len(x) // batch
    end_step = steps * (epochs * rounds + 1)  # the schedule ends on the last timed step

    def fit(model, kind, n):
        model.fit(x, y, batch_size=batch, epochs=n, verbose=0, shuffle=True)

    keras.utils.set_random_seed(0)
    builders = {
        "plain": lambda: example_cnn(),
        "prune": lambda: pruning.prune(
            example_cnn(), pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=end_step, frequency=max(1, steps // 4))
        ),
        "qat": lambda: quantization.quantize(example_cnn()),
    }
    return builders, fit


def tfmot_setup(settings: dict, x, y):
    """tfmot's builders and fit on tf_keras (the process has TF_USE_LEGACY_KERAS=1)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _tfmot_prune import example_cnn

    batch, epochs, rounds = settings["batch_size"], settings["epochs"], settings.get("paired_rounds", 1)
    steps = len(x) // batch
    end_step = steps * (epochs * rounds + 1)
    tf_keras.utils.set_random_seed(0)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=end_step, frequency=max(1, steps // 4))
    builders = {
        "plain": lambda: example_cnn(),
        "prune": lambda: tfmot.sparsity.keras.prune_low_magnitude(example_cnn(), pruning_schedule=schedule),
        "qat": lambda: tfmot.quantization.keras.quantize_model(example_cnn()),
    }

    def fit(model, kind, n):
        # tfmot's schedule advances in this callback, which Keras calls once per execution.
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep()] if kind == "prune" else []
        model.fit(x, y, batch_size=batch, epochs=n, verbose=0, shuffle=True, callbacks=callbacks)

    return builders, fit


def keras3_worker(settings: dict) -> dict:
    """Runs in a child process whose KERAS_BACKEND is already set."""
    import keras

    x, y = _mnist(settings)
    builders, fit = keras3_setup(settings, x, y)
    if keras.backend.backend() == "torch":  # Keras refuses steps_per_execution > 1 on torch
        settings = {**settings, "steps_per_execution": [1]}
    rates = _time_kinds(builders, _compiled, fit, settings, len(x))
    devices = []
    if keras.backend.backend() == "jax":
        import jax

        devices = sorted({f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()})
    return {"engine": keras.backend.backend(), "keras": keras.__version__, "devices": devices, **rates}


def tfmot_worker(settings: dict) -> dict:
    """Runs in a child process with TF_USE_LEGACY_KERAS=1."""
    import tf_keras

    x, y = _mnist(settings)
    builders, fit = tfmot_setup(settings, x, y)
    rates = _time_kinds(builders, _compiled, fit, settings, len(x))
    return {"engine": "tfmot", "keras": tf_keras.__version__, "devices": [], **rates}


def paired_worker(settings: dict) -> dict:
    """kstruct on Keras 3 (TensorFlow) and tfmot on tf_keras in one process, taking turns epoch by epoch.

    Why one process: on a shared machine two processes started minutes apart see different
    neighbours; here each round times every model back to back, so a slow spell hits all of
    them, and the ratio of two figures of the same run compares like with like. Both share
    TensorFlow's runtime (TF_USE_LEGACY_KERAS=1 points tfmot at tf_keras; `import keras` is Keras 3).
    """
    import keras

    x, y = _mnist(settings)
    setups = {"tensorflow": keras3_setup(settings, x, y), "tfmot": tfmot_setup(settings, x, y)}
    models = {}
    for per_call in settings["steps_per_execution"]:
        for engine, (builders, fit) in setups.items():
            for kind in settings["kinds"]:
                model = _compiled(builders[kind](), per_call)
                fit(model, kind, 1)  # warm-up: tracing
                models[(engine, kind, per_call)] = (model, fit)
    rates = {}
    for _ in range(settings["paired_rounds"]):
        for (engine, kind, per_call), (model, fit) in models.items():
            started = time.perf_counter()
            fit(model, kind, settings["epochs"])
            rate = len(x) * settings["epochs"] / (time.perf_counter() - started)
            key = f"{engine} {kind}@{per_call}"
            rates[key] = max(rates.get(key, 0.0), rate)
    for (engine, kind, per_call), (model, _) in models.items():
        if kind == "prune":
            rates[f"{engine} prune@{per_call} sparsity"] = _mask_sparsity(model)
    return {"engine": "tensorflow+tfmot", "keras": keras.__version__, "devices": [], **rates}


def _best(runs: list[dict]) -> dict:
    """One engine's rounds folded into one row: the highest images/s of each kind (sparsity from the first round)."""
    good = [run for run in runs if "error" not in run]
    if not good:
        return runs[0]
    best = dict(good[0])
    for run in good[1:]:
        for key, value in run.items():
            if "@" in key and "sparsity" not in key:
                best[key] = max(best[key], value)
    return best


def run_engine(engine: str, settings: dict) -> dict:
    env = dict(os.environ)
    if engine in ("tfmot", "paired"):
        env["TF_USE_LEGACY_KERAS"] = "1"
    env["KERAS_BACKEND"] = "tensorflow" if engine in ("tfmot", "paired") else engine
    done = subprocess.run(
        [sys.executable, __file__, "--worker", engine, "--settings", json.dumps(settings)],
        env=env, capture_output=True, text=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"engine": engine, "error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def _paired_rows(result: dict) -> list[dict]:
    """The paired worker's one result split into a kstruct row and a tfmot row."""
    if "error" in result:
        return [result]
    rows = []
    for engine, label in (("tensorflow", "kstruct, TensorFlow (paired)"), ("tfmot", "tfmot (paired)")):
        rates = {key.split(" ", 1)[1]: value for key, value in result.items() if key.startswith(f"{engine} ")}
        rows.append({"engine": label, "devices": [], **rates})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="paired,jax,torch",
                        help="comma-separated: tensorflow, jax, torch (kstruct on that Keras backend), tfmot (tf_keras), "
                             "each in a process of its own; paired: kstruct on TensorFlow and tfmot in one process, "
                             "taking turns epoch by epoch for --rounds turns (the ratios to trust on a shared machine)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--repeat", type=int, default=2, help="tile MNIST-5k's training images this many times")
    parser.add_argument("--steps-per-execution", default="1,8",
                        help="optimizer steps per compiled call (Keras's compile argument), comma-separated; each "
                             "value is timed for every engine and kind")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best round of each engine is shown")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        settings = json.loads(args.settings)
        worker = {"tfmot": tfmot_worker, "paired": paired_worker}.get(args.worker, keras3_worker)
        print(json.dumps(worker(settings)), flush=True)
        return

    settings = {"batch_size": args.batch_size, "epochs": args.epochs, "repeat": args.repeat,
                "steps_per_execution": [int(v) for v in args.steps_per_execution.split(",")],
                "kinds": args.kinds.split(",")}
    print(f"CPU: {cpu_description()}")
    print(f"example CNN, MNIST-5k's training images x{args.repeat} an epoch, batch {args.batch_size}, "
          f"{args.epochs} timed epochs after 1 warm-up; images/s (higher is better)")
    engines = [engine for engine in args.engines.split(",") if engine != "paired"]
    # Engines take turns, round after round, so that a slow spell of a shared machine hits
    # all of them; each figure is the engine's best round (the least disturbed one).
    rounds = [[run_engine(engine, settings) for engine in engines] for _ in range(args.rounds)]
    rows = [_best(list(runs)) for runs in zip(*rounds)]
    if "paired" in args.engines.split(","):
        rows = _paired_rows(run_engine("paired", {**settings, "paired_rounds": args.rounds})) + rows
    print(f"best of {args.rounds} interleaved round(s)")
    print("images/s by steps per execution (Keras's compile argument); 'prune sparsity' is the masks' final sparsity "
          f"(the schedule ends at 0.75 on the last step)\n| engine | steps per execution | "
          + " | ".join(settings["kinds"]) + " | prune sparsity | devices |\n|---|---|" + "---|" * (len(settings["kinds"]) + 2))
    for row in rows:
        if "error" in row:
            print(f"| {row['engine']} | failed: {row['error']} |")
            continue
        for per_call in settings["steps_per_execution"]:
            rates = " | ".join(f"{row.get(f'{kind}@{per_call}', float('nan')):,.0f}" for kind in settings["kinds"])
            sparsity = row.get(f"prune@{per_call} sparsity", float("nan"))
            print(f"| {row['engine']} | {per_call} | {rates} | {sparsity:.3f} | {' '.join(row['devices']) or 'cpu'} |")
    paired = {row["engine"]: row for row in rows if row["engine"].endswith("(paired)")}
    if len(paired) == 2:
        ours, theirs = paired["kstruct, TensorFlow (paired)"], paired["tfmot (paired)"]
        print("\nkstruct on TensorFlow / tfmot, same process (above 1: kstruct trains faster)")
        for per_call in settings["steps_per_execution"]:
            ratios = ", ".join(f"{kind} {ours[f'{kind}@{per_call}'] / theirs[f'{kind}@{per_call}']:.2f}x" for kind in settings["kinds"])
            print(f"  {per_call} step(s) per execution: {ratios}")
    print(json.dumps(rounds))


if __name__ == "__main__":
    main()
