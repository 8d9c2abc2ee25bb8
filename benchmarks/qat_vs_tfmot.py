"""kstruct QAT (Keras 3) against tfmot PQAT (tf_keras): prune, then int8 QAT, of the example CNN on MNIST-5k.

Both engines start from the same trained weights, prune to the same sparsity with
the same PolynomialDecay schedule, then fine-tune with quantization-aware
training for the same epochs (tfmot: `quantize_apply` with
`Default8BitPrunePreserveQuantizeScheme`; kstruct: `quantize`, which preserves
the zeros by default). Both QAT models are converted to full-int8 TFLite with
int8 I/O at batch 1 and measured by the same code on LiteRT. A third line is the
converter's post-training quantization (ptq) of kstruct's pruned model.

tf_keras and Keras 3 do not share a process cleanly, so tfmot runs in a child
process of this script (`--tfmot-worker`) with TF_USE_LEGACY_KERAS=1.

The shared base trains under `seed`, the fine-tuning runs under another seed:
Keras 3 shuffles the same way for the same seed, so a fine-tuning seeded like the
base would replay the base's batches in the same order, which cost kstruct about
0.3 points of pruned accuracy in earlier runs (tfmot, on tf_keras's own random
streams, never replayed them).

Epoch times are taken on `TIMING_EPOCHS` more QAT epochs after the accuracy is
measured (the accuracy run is too short to time on a shared machine); both the
mean and the median of the epochs after the first are printed.

Prints one JSON line per engine (means over seeds). Run: `python benchmarks/qat_vs_tfmot.py`.
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
BATCH_SIZE = 32
FINE_TUNE_SEED_OFFSET = 1000  # fine-tuning seed = base seed + this (see the docstring)
TIMING_EPOCHS = 4  # QAT epochs trained after the accuracy is measured, for the epoch times only


def _epoch_seconds_callback(callbacks_module, seconds: list):
    return callbacks_module.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seconds.append(-time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.__setitem__(-1, seconds[-1] + time.perf_counter()),
    )


def _timed_epochs(model, callbacks_module, x, y, seconds: list) -> dict:
    """Trains `TIMING_EPOCHS` more epochs (after accuracy is measured) and sums up every steady epoch.

    Epoch times after the first (which includes graph tracing): their mean, and
    their median, which leaves out Keras 3's occasional stall of about 0.6 s at
    an epoch's start (tf.data tearing down the last epoch's iterator; it shows
    with no model at all, and not on tf_keras).
    """
    model.fit(x, y, epochs=TIMING_EPOCHS, batch_size=BATCH_SIZE, verbose=0,
              callbacks=[_epoch_seconds_callback(callbacks_module, seconds)])
    steady = sorted(seconds[1:])
    middle = len(steady) // 2
    median = steady[middle] if len(steady) % 2 else (steady[middle - 1] + steady[middle]) / 2
    return {"qat_epoch_seconds": sum(steady) / len(steady), "qat_epoch_seconds_median": median}


# --- tfmot, in its own process -------------------------------------------------------------


def tfmot_worker(base_path: str, out_path: str, settings: dict) -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from _tfmot_prune import example_cnn, int8_tflite  # the same CNN in tf_keras (a sibling script)

    from kstruct.data import load_mnist_5k  # numpy only: no Keras 3 import

    keras.utils.set_random_seed(settings["seed"])
    (x, y), (xt, yt) = load_mnist_5k()
    model = example_cnn()
    base = np.load(base_path)
    model.set_weights([base[f"w{i}"] for i in range(len(base.files))])

    def compiled(m):
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    schedule = tfmot.sparsity.keras.PolynomialDecay(
        0.0, settings["sparsity"], begin_step=0, end_step=settings["end_step"], frequency=settings["frequency"]
    )
    pruned = compiled(tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule))
    pruned.fit(x, y, epochs=settings["prune_epochs"], batch_size=BATCH_SIZE, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    pruned_accuracy = float(np.mean(stripped.predict(xt, verbose=0).argmax(-1) == yt))
    np.savez(out_path + ".pruned.npz", **{f"w{i}": w for i, w in enumerate(stripped.get_weights())})

    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    qat = compiled(tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    ))
    seconds: list = []
    qat.fit(x, y, epochs=settings["qat_epochs"], batch_size=BATCH_SIZE, verbose=0,
            callbacks=[_epoch_seconds_callback(keras.callbacks, seconds)])
    keras_accuracy = float(np.mean(qat.predict(xt, verbose=0).argmax(-1) == yt))

    Path(out_path).write_bytes(int8_tflite(qat))
    np.save(out_path + ".predictions.npy", qat.predict(xt, verbose=0))
    timing = _timed_epochs(qat, keras.callbacks, x, y, seconds)
    print(json.dumps({"pruned_float_accuracy": pruned_accuracy, "keras_accuracy": keras_accuracy, **timing,
                      "tfmot": tfmot.__version__, "tf_keras": keras.__version__}))


# --- kstruct, in this process ----------------------------------------------------------------


def measure(blob: bytes, keras_predictions, xt, yt) -> dict:
    import numpy as np
    import tflite_export

    tflite_predictions = tflite_export.predict(blob, xt)
    result = {
        "int8_accuracy": float(np.mean(tflite_predictions.argmax(-1) == yt)),
        "int8_gzip_bytes": len(gzip.compress(blob, compresslevel=9)),
        "latency_ms_1_image": tflite_export.benchmark(blob, threads=1, runs=200, warmup=10).median_ms,
    }
    if keras_predictions is not None:
        result["top1_agreement_keras_vs_int8"] = float(np.mean(keras_predictions.argmax(-1) == tflite_predictions.argmax(-1)))
    return result


def run_tfmot(weights, settings: dict, xt, yt) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        base_file, out_file = Path(tmp, "base.npz"), Path(tmp, "tfmot.tflite")
        np.savez(base_file, **{f"w{i}": w for i, w in enumerate(weights)})
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        done = subprocess.run(
            [sys.executable, __file__, "--tfmot-worker", str(base_file), str(out_file), json.dumps(settings)],
            capture_output=True, text=True, check=False, env=env,
        )
        if done.returncode != 0:
            sys.exit(f"tfmot run failed:\n{done.stderr[-3000:]}")
        run = json.loads(done.stdout.strip().splitlines()[-1])
        blob = out_file.read_bytes()
        keras_predictions = np.load(str(out_file) + ".predictions.npy")
        pruned = np.load(str(out_file) + ".pruned.npz")
        pruned_weights = [pruned[f"w{i}"] for i in range(len(pruned.files))]
    return {"engine": "tfmot pqat", **run, **measure(blob, keras_predictions, xt, yt)}, pruned_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--base-epochs", type=int, default=3, help="epochs of the shared float model")
    parser.add_argument("--prune-epochs", type=int, default=2)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--repeats", type=int, default=3, help="seeds; figures are means over them")
    args = parser.parse_args()

    import numpy as np

    from kstruct.data import load_mnist_5k
    from kstruct.pruning.step import Prune

    (x, y), (xt, yt) = load_mnist_5k()
    steps = args.prune_epochs * int(np.ceil(len(x) / BATCH_SIZE))
    schedule = Prune(args.sparsity).pruning_schedule(steps)  # the schedule the prune step would use
    runs: dict[str, list[dict]] = {}
    for seed in range(args.seed, args.seed + args.repeats):
        for line in run_seed(seed, schedule, args, (x, y, xt, yt)):
            runs.setdefault(line["engine"], []).append(line)
    for engine, lines in runs.items():
        print(json.dumps(summarize(engine, lines)), flush=True)


def summarize(engine: str, lines: list[dict]) -> dict:
    """Means over seeds of the numeric fields (with the std of the accuracies); other fields as in the first run."""
    import numpy as np

    summary = {"engine": engine, "seeds": len(lines)}
    for key, value in lines[0].items():
        if key == "engine":
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [line[key] for line in lines]
            summary[key] = float(np.mean(values))
            if key.endswith("accuracy") and len(values) > 1:
                summary[key + "_std"] = float(np.std(values))
        else:
            summary[key] = value
    return summary


def run_seed(seed: int, schedule, args, data) -> list[dict]:
    import keras
    import tflite_export

    from kstruct import pruning
    from kstruct.models import compile_for_classification, example_cnn

    x, y, xt, yt = data
    keras.utils.set_random_seed(seed)
    base = compile_for_classification(example_cnn())
    base.fit(x, y, epochs=args.base_epochs, batch_size=BATCH_SIZE, verbose=0)
    weights = base.get_weights()
    common = {"sparsity": args.sparsity, "prune_epochs": args.prune_epochs, "qat_epochs": args.qat_epochs,
              "float_accuracy": float(base.evaluate(xt, yt, verbose=0)[1])}

    # kstruct: prune, strip, then QAT.
    fine_tune_seed = seed + FINE_TUNE_SEED_OFFSET
    keras.utils.set_random_seed(fine_tune_seed)
    model = compile_for_classification(example_cnn())
    model.set_weights(weights)
    wrapped = compile_for_classification(pruning.prune(model, schedule))
    wrapped.fit(x, y, epochs=args.prune_epochs, batch_size=BATCH_SIZE, verbose=0)
    stripped = compile_for_classification(pruning.strip(wrapped))
    ours = {"engine": "kstruct qat", **common, **kstruct_qat(stripped, args.qat_epochs, data)}

    # The converter's post-training quantization of the same pruned model, for reference.
    ptq_blob = tflite_export.convert(stripped, "int8", representative_data=x[:200])
    ptq = {"engine": "kstruct ptq", **common, "keras_accuracy": float(stripped.evaluate(xt, yt, verbose=0)[1]),
           **measure(ptq_blob, stripped.predict(xt, verbose=0), xt, yt)}

    settings = {"seed": fine_tune_seed, "sparsity": args.sparsity, "end_step": schedule.end_step,
                "frequency": schedule.frequency, "prune_epochs": args.prune_epochs, "qat_epochs": args.qat_epochs}
    theirs, tfmot_pruned = run_tfmot(weights, settings, xt, yt)
    theirs = {"engine": theirs.pop("engine"), **common, **theirs}

    # kstruct's QAT on tfmot's pruned weights: the QAT step compared alone, from the same start.
    keras.utils.set_random_seed(fine_tune_seed)
    same_start = compile_for_classification(example_cnn())
    same_start.set_weights(tfmot_pruned)
    crossed = {"engine": "kstruct qat on tfmot-pruned weights", **common, **kstruct_qat(same_start, args.qat_epochs, data)}
    return [ours, theirs, crossed, ptq]


def kstruct_qat(pruned: "keras.Model", epochs: int, data) -> dict:
    import keras
    import numpy as np
    import tflite_export

    from kstruct.quantization import quantize

    x, y, xt, yt = data
    pruned_accuracy = float(pruned.evaluate(xt, yt, verbose=0)[1])
    qat = quantize(pruned)
    seconds: list = []
    qat.fit(x, y, epochs=epochs, batch_size=BATCH_SIZE, verbose=0, callbacks=[_epoch_seconds_callback(keras.callbacks, seconds)])
    keras_predictions = qat.predict(xt, verbose=0)
    blob = tflite_export.convert(qat, "int8", representative_data=x[:200])
    measured = measure(blob, keras_predictions, xt, yt)
    return {"pruned_float_accuracy": pruned_accuracy, "keras_accuracy": float(np.mean(keras_predictions.argmax(-1) == yt)),
            **_timed_epochs(qat, keras.callbacks, x, y, seconds), "keras": keras.__version__, **measured}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tfmot-worker":
        tfmot_worker(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    else:
        main()
