"""Training throughput (images/s) of `prune` and QAT fine-tuning on 1 and 2 replicas (issue 22).

The example CNN (`kstruct.models.example_cnn`, `compile_for_classification`) on MNIST-5k's 4,000
training images, tiled `--repeat` times so that an epoch is long enough to time. For each replica
count and batch size, a child process builds and fits, in the distribution's scope as
`optimize(..., distribution=...)`'s steps do: a plain model (the reference), kstruct's `pruning.prune`
(PolynomialDecay to 75% over the timed epochs) and `quantization.quantize` (QAT). Throughput is the
steady state: `--epochs` epochs timed after one warm-up epoch (tracing, compilation).

- TensorFlow (default): 1 replica is no strategy, the way most users train; N replicas are a
  `tf.distribute.MirroredStrategy` over N logical CPUs, which TensorFlow sets only before it first
  lists its devices: hence one process per configuration.
- `--backend jax`: `keras.distribution.DataParallel` over N host devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=N`, set before JAX starts); 1 replica is none.

Logical CPUs share the same cores: on a CPU-only machine more replicas split each batch, they add no
compute, so no gain is expected; the figures measure the distribution's overhead. On a GPU machine,
`MirroredStrategy()` takes every GPU: `--devices gpu` there (not run here).

The batch size is the global one (each replica gets batch / N). Configurations run in turn,
`--rounds` times, and the best round counts (a shared machine's slow spells hit some runs). Images
per CPU-second (every thread's CPU time in the timed epochs) is the steadier figure on a busy
machine: it counts the work, not the waiting. The load average is printed before and after.

Run: `python benchmarks/scale.py` (TensorFlow, 1 and 2 replicas, batch 256; 2-3 minutes on 2 cores),
`python benchmarks/scale.py --backend jax --rounds 1`; on a GPU machine (not run here)
`python benchmarks/scale.py --devices gpu --batch-sizes 1024,4096 --repeat 20`.
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
sys.path.insert(0, str(ROOT))
KINDS = ("plain", "prune", "qat")
MARKER = "kstruct-scale:"

from benchmarks.backends import cpu_description  # noqa: E402  (one way to print the CPU)


# --- in the child -------------------------------------------------------------------------------


def _distribution(backend: str, replicas: int, devices: str):
    """The distribution for `replicas` replicas, or None for one; set up before the backend lists devices."""
    if backend == "jax":
        import keras

        if replicas == 1:
            return None
        import jax

        return keras.distribution.DataParallel(devices=jax.devices()[:replicas])
    import tensorflow as tf

    if devices == "gpu":
        names = [f"/gpu:{i}" for i in range(replicas)]
    else:
        if replicas > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
        names = [f"/cpu:{i}" for i in range(replicas)]
    if replicas == 1 and devices != "gpu":
        return None
    return tf.distribute.MirroredStrategy(names)


def child(settings: dict) -> dict:
    """Times every kind for one (backend, replicas, batch size); runs in a process of its own."""
    backend, replicas, batch = settings["backend"], settings["replicas"], settings["batch_size"]
    distribution = _distribution(backend, replicas, settings["devices"])
    import contextlib

    import keras
    import numpy as np

    from kstruct import pruning, quantization
    from kstruct.data import load_mnist_5k
    from kstruct.models import compile_for_classification, example_cnn

    (x, y), _ = load_mnist_5k()
    x, y = np.tile(x, (settings["repeat"], 1, 1, 1)), np.tile(y, settings["repeat"])
    steps = len(x) // batch
    x, y = x[: steps * batch], y[: steps * batch]  # whole batches only: one step shape, no retracing
    end_step = steps * (settings["epochs"] + 1)  # the schedule reaches 75% on the last timed step
    builders = {
        "plain": example_cnn,
        "prune": lambda: pruning.prune(
            example_cnn(), pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=end_step, frequency=max(1, steps // 4))
        ),
        "qat": lambda: quantization.quantize(example_cnn()),
    }
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    rates, sparsity = {}, None
    with scope:
        for kind in KINDS:
            keras.utils.set_random_seed(0)
            model = compile_for_classification(builders[kind]())
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # warm-up: tracing and compilation
            started, cpu_started = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=batch, epochs=settings["epochs"], verbose=0)
            images = len(x) * settings["epochs"]
            rates[kind] = images / (time.perf_counter() - started)
            rates[f"{kind} cpu"] = images / (time.process_time() - cpu_started)  # every thread's CPU time
            if kind == "prune":
                masks = [keras.ops.convert_to_numpy(w) for w in model.weights if w.name.split("/")[-1] == "mask"]
                sparsity = float(1 - sum(m.sum() for m in masks) / sum(m.size for m in masks))
    if backend == "jax":
        import jax

        found = sorted({f"{d.platform}" for d in jax.devices()}) + [f"{len(jax.devices())} devices"]
    else:
        import tensorflow as tf

        found = [f"{len(tf.config.list_logical_devices('CPU'))} logical CPUs",
                 f"{len(tf.config.list_physical_devices('GPU'))} GPUs"]
    return {**settings, "rates": rates, "prune_sparsity": sparsity, "found": found, "keras": keras.__version__}


# --- in the parent ------------------------------------------------------------------------------


def run_child(settings: dict) -> dict:
    env = {**os.environ, "KERAS_BACKEND": settings["backend"]}
    if settings["backend"] == "jax":
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={settings['replicas']}"])
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(settings)], capture_output=True, text=True, env=env, timeout=900
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"configuration {settings} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARKER):])


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    parser.add_argument("--replicas", default="1,2", help="replica counts, comma-separated (default 1,2)")
    parser.add_argument("--batch-sizes", default="256", help="global batch sizes, comma-separated (default 256)")
    parser.add_argument("--devices", choices=("cpu", "gpu"), default="cpu",
                        help="TensorFlow: replicas on logical CPUs (default) or on that many GPUs")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="MNIST-5k's 4,000 training images tiled this often")
    parser.add_argument("--rounds", type=int, default=3, help="every configuration this often, the best counts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(MARKER + json.dumps(child(json.loads(args.child))), flush=True)
        return

    configurations = [
        {"backend": args.backend, "replicas": replicas, "batch_size": batch, "devices": args.devices,
         "epochs": args.epochs, "repeat": args.repeat}
        for batch in _numbers(args.batch_sizes) for replicas in _numbers(args.replicas)
    ]
    print(f"CPU: {cpu_description()}")
    print(f"{args.backend}; example CNN on MNIST-5k's 4,000 training images x {args.repeat} (cut to whole batches); "
          f"{args.epochs} epochs timed after one warm-up epoch; best of {args.rounds} rounds; replicas on {args.devices}",
          flush=True)
    best: dict[tuple[int, int], dict] = {}
    started, load = time.perf_counter(), " ".join(f"{v:.1f}" for v in os.getloadavg())
    for _ in range(args.rounds):  # configurations in turn, so a slow spell does not hit one alone
        for settings in configurations:
            result = run_child(settings)
            key = (settings["batch_size"], settings["replicas"])
            if key in best:
                result["rates"] = {k: max(v, best[key]["rates"][k]) for k, v in result["rates"].items()}
            best[key] = result
    print(f"keras {next(iter(best.values()))['keras']}; {time.perf_counter() - started:.0f} s in all; load average "
          f"{load} before, {' '.join(f'{v:.1f}' for v in os.getloadavg())} after (1, 5, 15 min)\n")
    names = {"plain": "plain fit", "prune": "`prune`", "qat": "QAT"}
    print("| training | replicas | batch size | images/s | vs 1 replica | images per CPU-second | vs 1 replica |")
    print("|---|---|---|---|---|---|---|")
    fewest = min(_numbers(args.replicas))
    for kind in KINDS:
        for (batch, replicas), result in best.items():
            base = best[(batch, fewest)]["rates"]
            wall, cpu = result["rates"][kind], result["rates"][f"{kind} cpu"]
            versus = [f"{wall / base[kind]:.2f}x", f"{cpu / base[f'{kind} cpu']:.2f}x"] if replicas != fewest else ["", ""]
            print(f"| {names[kind]} | {replicas} | {batch:,} | {wall:,.0f} | {versus[0]} | {cpu:,.0f} | {versus[1]} |")
    for (batch, replicas), result in best.items():
        print(f"\n{replicas} replica(s), batch {batch:,}: prune reached {result['prune_sparsity']:.3f} sparsity; "
              f"devices seen: {', '.join(result['found'])}", end="")
    print()


if __name__ == "__main__":
    main()
