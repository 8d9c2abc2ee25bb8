"""Weight clustering on the example CNN and MNIST-5k: accuracy, raw and gzipped int8 bytes, distinct values.

One base model is trained, then each strategy runs through `kstruct.optimize`
from the same base weights, with the same data, epochs and seed, to an int8
TFLite file. The distinct values are read back from the file's int8 kernels:
for FULLY_CONNECTED (per-tensor scales) over the whole kernel, for CONV_2D
(per-channel scales) the largest count in one output channel.

Clustering shrinks the gzipped file, not the raw one: every weight is still
stored, but a kernel of 16 values compresses far better.

Run: `python benchmarks/cluster.py [--epochs 2] [--seed 0]`.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STRATEGIES = (
    "qat",
    "cluster(16)",
    "cluster(16) + qat",
    "cluster(16, per_channel=true) + qat",
    "prune(0.75) + qat",
    "prune(0.75) + cluster(16) + qat",
)


def _kernel_values(blob: bytes) -> dict[str, int]:
    """Largest distinct-value count among the file's FULLY_CONNECTED kernels and CONV_2D channels."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    counts = {"FULLY_CONNECTED": 0, "CONV_2D": 0}
    for op in interpreter._get_ops_details():
        if op["op_name"] not in counts:
            continue
        values = interpreter.get_tensor(op["inputs"][1])
        if op["op_name"] == "CONV_2D":
            count = max(np.unique(values[c]).size for c in range(values.shape[0]))
        else:
            count = np.unique(values).size
        counts[op["op_name"]] = max(counts[op["op_name"]], int(count))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per step")
    parser.add_argument("--base-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
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
    for strategy in STRATEGIES:
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
        final = result.report.stages[-1]
        rows.append((strategy, final.tflite_accuracy, final.tflite_bytes, final.tflite_gzip_bytes,
                     _kernel_values(result.tflite)))

    print(f"example CNN, MNIST-5k (test {len(xt)}), int8 TFLite, {args.epochs} epochs per step, seed {args.seed}")
    print(f"{'strategy':<38} {'int8 acc':>8} {'bytes':>8} {'gzip B':>8} {'FC values':>9} {'conv/ch':>8}")
    for name, accuracy, raw, gzipped, counts in rows:
        print(f"{name:<38} {accuracy:>8.4f} {raw:>8,} {gzipped:>8,} {counts['FULLY_CONNECTED']:>9} {counts['CONV_2D']:>8}")


if __name__ == "__main__":
    main()
