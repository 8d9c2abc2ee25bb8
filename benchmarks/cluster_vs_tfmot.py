"""Weight clustering on the example CNN and MNIST-5k: accuracy, raw and gzipped int8 bytes, distinct values.

One base model is trained, then each strategy runs through `kstruct.optimize`
from the same base weights, with the same data, epochs and seed, to an int8
TFLite file. The distinct values are read back from the file's int8 kernels:
for FULLY_CONNECTED (per-tensor scales) over the whole kernel, for CONV_2D
(per-channel scales) the largest count in one output channel.

Clustering shrinks the gzipped file, not the raw one: every weight is still
stored, but a kernel of 16 values compresses far better.

Against tfmot (`--tfmot`): from the same base weights, with the same epochs,
tfmot's `cluster_weights` (k-means++) then CQAT
(`Default8BitClusterPreserveQuantizeScheme`), and tfmot's PCQAT
(`prune_low_magnitude` with the schedule kstruct's prune step uses, then
sparsity-preserving clustering and CQAT), on tf_keras in a child process
(tf_keras and Keras 3 do not share a process cleanly). Its files are measured
by the same code.

Run: `python benchmarks/cluster_vs_tfmot.py [--epochs 2] [--seed 0] [--tfmot]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STRATEGIES = (
    "qat",
    "cluster(16)",
    "cluster(16) + qat",
    "cluster(16, entropy_weight=0) + qat",
    "cluster(16, entropy_weight=0.05) + qat",
    "cluster(16, init='linear') + qat",
    "cluster(16, init='density') + qat",
    "cluster(16, init='random') + qat",
    "cluster(16, per_channel=true) + qat",
    "prune(0.75) + qat",
    "prune(0.75) + cluster(16) + qat",
    "prune(0.75) + cluster(16, entropy_weight=0) + qat",
    "prune(0.75) + cluster(16, entropy_weight=0.05) + qat",
    "prune(0.75) + cluster(16, init='linear') + qat",
    "prune(0.75) + cluster(8) + qat",
)


def _kernel_values(blob: bytes) -> dict[str, float]:
    """Largest distinct-value count among the file's FULLY_CONNECTED kernels and CONV_2D channels.

    Also, for the largest FULLY_CONNECTED kernel (most of the file): the entropy of its
    values in bits per weight ("FC bits", what gzip's Huffman stage pays) and the share of
    its weights holding its two most used values ("top 2").
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    counts = {"FULLY_CONNECTED": 0, "CONV_2D": 0, "FC bits": 0.0, "top 2": 0.0}
    largest = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] not in counts:
            continue
        values = interpreter.get_tensor(op["inputs"][1])
        if op["op_name"] == "CONV_2D":
            count = max(np.unique(values[c]).size for c in range(values.shape[0]))
        else:
            count = np.unique(values).size
        counts[op["op_name"]] = max(counts[op["op_name"]], int(count))
        if op["op_name"] == "FULLY_CONNECTED" and values.size > largest:
            largest = values.size
            share = np.unique(values, return_counts=True)[1] / values.size
            counts["FC bits"] = float(-(share * np.log2(share)).sum())
            counts["top 2"] = float(np.sort(share)[-2:].sum())
    return counts


def tfmot_worker(base_path: str, out_dir: str, settings: dict) -> None:
    """tfmot's side, on tf_keras: CQAT and PCQAT files written to `out_dir`."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from _tfmot_prune import compiled, example_cnn, int8_tflite  # the same CNN in tf_keras (a sibling script)

    from kstruct.data import load_mnist_5k  # numpy only: no Keras 3 import

    (x, y), _ = load_mnist_5k()
    base = np.load(base_path)
    weights = [base[f"w{i}"] for i in range(len(base.files))]
    clustering, combine = tfmot.clustering.keras, tfmot.experimental.combine
    epochs = settings["epochs"]

    def fit(model, callbacks=()):
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=list(callbacks))
        return model

    def cluster_then_cqat(model, preserve_sparsity: bool) -> bytes:
        clustered = compiled(clustering.cluster_weights(
            model, number_of_clusters=settings["clusters"], preserve_sparsity=preserve_sparsity,
            cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
        ))
        stripped = clustering.strip_clustering(fit(clustered))
        annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
        scheme = combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve_sparsity)
        qat = fit(compiled(tfmot.quantization.keras.quantize_apply(annotated, scheme)))
        return int8_tflite(qat)

    keras.utils.set_random_seed(settings["seed"])
    model = example_cnn()
    model.set_weights(weights)
    Path(out_dir, "cqat.tflite").write_bytes(cluster_then_cqat(model, preserve_sparsity=False))

    keras.utils.set_random_seed(settings["seed"])
    model = example_cnn()
    model.set_weights(weights)
    schedule = tfmot.sparsity.keras.PolynomialDecay(**settings["schedule"])
    pruned = compiled(tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule))
    pruned = tfmot.sparsity.keras.strip_pruning(fit(pruned, [tfmot.sparsity.keras.UpdatePruningStep()]))
    Path(out_dir, "pcqat.tflite").write_bytes(cluster_then_cqat(pruned, preserve_sparsity=True))
    print(json.dumps({"tfmot": tfmot.__version__, "tf_keras": keras.__version__}))


def run_tfmot(weights, settings: dict) -> dict[str, bytes]:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        base_file = Path(tmp, "base.npz")
        np.savez(base_file, **{f"w{i}": w for i, w in enumerate(weights)})
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        done = subprocess.run(
            [sys.executable, __file__, "--tfmot-worker", str(base_file), tmp, json.dumps(settings)],
            capture_output=True, text=True, check=False, env=env,
        )
        if done.returncode != 0:
            sys.exit(f"tfmot run failed:\n{done.stderr[-3000:]}")
        versions = json.loads(done.stdout.strip().splitlines()[-1])
        files = {name: Path(tmp, f"{name}.tflite").read_bytes() for name in ("cqat", "pcqat")}
    label = f"tfmot {versions['tfmot']}"
    return {f"{label} cluster + CQAT": files["cqat"], f"{label} prune + PCQAT": files["pcqat"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per step")
    parser.add_argument("--base-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tfmot", action="store_true", help="also run tfmot's CQAT and PCQAT on tf_keras")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), help="kstruct strategies to run")
    parser.add_argument("--save", type=Path, help="a folder to write every int8 file into")
    args = parser.parse_args()

    import keras
    import tflite_export

    import kstruct
    from kstruct.data import load_mnist_5k
    from kstruct.models import compile_for_classification, example_cnn

    (x, y), (xt, yt) = load_mnist_5k()
    keras.utils.set_random_seed(args.seed)
    base = compile_for_classification(example_cnn())
    base.fit(x, y, epochs=args.base_epochs, batch_size=32, verbose=0)
    base_weights = base.get_weights()

    rows = []
    files: dict[str, bytes] = {}
    for strategy in args.strategies:
        keras.utils.set_random_seed(args.seed + 1000)  # fine-tuning never replays the base's batches
        base.set_weights(base_weights)
        result = kstruct.optimize(
            base, strategy, train_data=(x, y), validation_data=(xt, yt), epochs=args.epochs, verbose=0
        )
        if not rows:
            original = result.report.stages[0]
            rows.append(("original (ptq)", original.tflite_accuracy, original.tflite_bytes,
                         original.tflite_gzip_bytes, _kernel_values(tflite_export.convert(
                             base, "int8", representative_data=x[:200]))))
        files[strategy] = result.tflite
        final = result.report.stages[-1]
        rows.append((strategy, final.tflite_accuracy, final.tflite_bytes, final.tflite_gzip_bytes,
                     _kernel_values(result.tflite)))

    if args.tfmot:
        import gzip

        import numpy as np

        from kstruct.pruning.step import Prune

        schedule = Prune(0.75).pruning_schedule(args.epochs * int(np.ceil(len(x) / 32)))
        settings = {
            "seed": args.seed + 1000, "epochs": args.epochs, "clusters": 16,
            "schedule": {"initial_sparsity": 0.0, "final_sparsity": 0.75, "begin_step": 0,
                         "end_step": schedule.end_step, "frequency": schedule.frequency},
        }
        for name, blob in run_tfmot(base_weights, settings).items():
            files[name] = blob
            accuracy = tflite_export.evaluate(blob, xt, yt)
            rows.append((name, accuracy, len(blob), len(gzip.compress(blob, compresslevel=9)), _kernel_values(blob)))

    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, blob in files.items():
            (args.save / f"{''.join(c if c.isalnum() else '_' for c in name)}.tflite").write_bytes(blob)

    print(f"example CNN, MNIST-5k (test {len(xt)}), int8 TFLite, {args.epochs} epochs per step, seed {args.seed}")
    print(f"{'strategy':<48} {'int8 acc':>8} {'bytes':>8} {'gzip B':>8} {'FC values':>9} {'conv/ch':>8} {'FC bits':>8} {'top 2':>6}")
    for name, accuracy, raw, gzipped, counts in rows:
        print(f"{name:<48} {accuracy:>8.4f} {raw:>8,} {gzipped:>8,} {counts['FULLY_CONNECTED']:>9} {counts['CONV_2D']:>8} "
              f"{counts['FC bits']:>8.2f} {counts['top 2']:>6.1%}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--tfmot-worker":
        sys.path.insert(0, str(Path(__file__).parent))
        tfmot_worker(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    else:
        main()
