"""kstruct (Keras 3) against tfmot (tf_keras): magnitude pruning of the example CNN on MNIST-5k.

Both engines start from the same trained weights and prune to the same sparsity
with the same PolynomialDecay schedule, epochs, batch size and optimizer. Both
stripped models are converted to full-int8 TFLite by the same code
(tflite_export), so the sizes compare like for like.

Prints one JSON line per engine, then one with the ratios. Run: `make bench`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tflite_export  # noqa: E402

from kstruct import pruning  # noqa: E402
from kstruct.data import load_mnist_5k  # noqa: E402
from kstruct.models import compile_for_classification, example_cnn  # noqa: E402
from kstruct.pruning.step import Prune  # noqa: E402

HERE = Path(__file__).resolve().parent


def int8_gzip_bytes(model: keras.Model, calibration: np.ndarray) -> int:
    blob = tflite_export.convert(model, "int8", representative_data=calibration)
    return len(gzip.compress(blob, compresslevel=9))


def fresh(weights) -> keras.Model:
    model = compile_for_classification(example_cnn())
    model.set_weights(weights)
    return model


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch; epochs after the first exclude graph tracing."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def timed_fit(model: keras.Model, x, y, epochs: int) -> tuple[float, float]:
    """(total fit seconds, seconds of the epochs after the first)."""
    timer = EpochTimer()
    started = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[timer])
    return time.perf_counter() - started, sum(timer.seconds[1:])


def run_kstruct(weights, schedule, data, epochs: int) -> dict:
    (x, y), (xt, yt) = data
    plain_total, plain_steady = timed_fit(fresh(weights), x, y, epochs)
    wrapped = pruning.prune(fresh(weights), schedule)
    total, steady = timed_fit(wrapped, x, y, epochs)
    stripped = compile_for_classification(pruning.strip(wrapped))
    return {
        "accuracy": float(stripped.evaluate(xt, yt, verbose=0)[1]),
        "sparsity": pruning.sparsity(stripped).overall,
        "int8_gzip_bytes": int8_gzip_bytes(stripped, x[:200]),
        "train_seconds": total,
        "plain_fit_seconds": plain_total,
        "steady_epoch_overhead": steady / plain_steady if plain_steady else None,
    }


def run_tfmot(weights, schedule, data, epochs: int, sparsity: float) -> dict:
    (x, _), _ = data
    with tempfile.TemporaryDirectory() as tmp:
        base_file, out_file = Path(tmp, "base.npz"), Path(tmp, "tfmot.npz")
        np.savez(base_file, **{f"w{i}": w for i, w in enumerate(weights)})
        done = subprocess.run(
            [sys.executable, str(HERE / "_tfmot_prune.py"), str(base_file), str(out_file), str(epochs),
             str(sparsity), str(schedule.end_step), str(schedule.frequency)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            sys.exit(f"tfmot run failed:\n{done.stderr[-3000:]}")
        run = json.loads(done.stdout.strip().splitlines()[-1])
        saved = np.load(out_file)
        model = fresh([saved[f"w{i}"] for i in range(len(saved.files))])
    run["sparsity"] = pruning.sparsity(model).overall
    run["int8_gzip_bytes"] = int8_gzip_bytes(model, x[:200])
    return run


def summarize(engine: str, runs: list[dict], extra: dict) -> dict:
    keys = ["accuracy", "sparsity", "int8_gzip_bytes", "train_seconds", "plain_fit_seconds", "steady_epoch_overhead"]
    summary = {"engine": engine, **extra, "runs": len(runs)}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            summary[key] = float(np.mean(values))
            if key == "accuracy":
                summary["accuracy_std"] = float(np.std(values))
    summary["overhead_vs_plain_fit"] = summary["train_seconds"] / summary["plain_fit_seconds"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--epochs", type=int, default=2, help="pruning fine-tuning epochs (both engines)")
    parser.add_argument("--base-epochs", type=int, default=3, help="epochs of the shared base model")
    parser.add_argument("--repeats", type=int, default=3, help="seeds; figures are means over them")
    args = parser.parse_args()

    data = load_mnist_5k()
    (x, y), _ = data
    steps = args.epochs * int(np.ceil(len(x) / 32))
    schedule = Prune(args.sparsity).pruning_schedule(steps)  # the schedule optimize() would use
    ours, theirs = [], []
    for seed in range(args.repeats):
        keras.utils.set_random_seed(seed)
        base = compile_for_classification(example_cnn())
        base.fit(x, y, epochs=args.base_epochs, batch_size=32, verbose=0)
        weights = base.get_weights()
        ours.append(run_kstruct(weights, schedule, data, args.epochs))
        theirs.append(run_tfmot(weights, schedule, data, args.epochs, args.sparsity))
    ours = summarize("kstruct", ours, {"keras": keras.__version__, "schedule": repr(schedule)})
    theirs = summarize("tfmot", theirs, {"tfmot": "0.8.1 on tf_keras"})
    print(json.dumps(ours), flush=True)
    print(json.dumps(theirs), flush=True)
    print(json.dumps({
        "comparison": "kstruct vs tfmot (means over seeds)",
        "accuracy_points_kstruct_minus_tfmot": 100 * (ours["accuracy"] - theirs["accuracy"]),
        "int8_gzip_ratio_kstruct_over_tfmot": ours["int8_gzip_bytes"] / theirs["int8_gzip_bytes"],
        "train_time_ratio_kstruct_over_tfmot": ours["train_seconds"] / theirs["train_seconds"],
        "kstruct_overhead_vs_plain_keras3_fit": ours["overhead_vs_plain_fit"],
        "kstruct_steady_epoch_overhead": ours.get("steady_epoch_overhead"),
        "tfmot_overhead_vs_plain_tf_keras_fit": theirs["overhead_vs_plain_fit"],
        "tfmot_steady_epoch_overhead": theirs.get("steady_epoch_overhead"),
    }))


if __name__ == "__main__":
    main()
