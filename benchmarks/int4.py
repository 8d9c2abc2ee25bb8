"""4-bit weights on LiteRT: kstruct's `qat(bits=4)` against int8 and ai-edge-quantizer's int4 PTQ (issue 25).

Three models on MNIST-5k (3,600 training digits, 400 for validation, the 1,000 test
digits used only for the figures): LeNet-300-100 (784-300-100-10), the example CNN,
and a small transformer block (the 28 rows of a digit as 28 tokens: Dense(64),
2-head self-attention and a 128-wide feed-forward, each residual with LayerNorm,
then mean pooling and the classifier). Each is trained in float (`--float-epochs`),
then every row starts from that same model:

- float32: the float file;
- int8 ptq: the converter's full-integer file, 200 calibration digits;
- int8 qat: `qat` for `--epochs`, target int8;
- int4 ptq: ai-edge-quantizer's `int4` file from the float one (4-bit Dense/Conv
  kernels per channel, int8 activations), and `int4-weights` (its `af32w4float` kind);
- qat(bits=4): `qat(bits=4)` for `--epochs`, target int4;
- prune(0.9) + cluster(16) + qat(bits=4): each step `--epochs`.

Figures per row (mean +/- std over seeds): raw and gzipped file bytes, test accuracy
of the file on LiteRT, and its one-thread LiteRT latency (median of 100 runs).

Run: `nice -n 10 python benchmarks/int4.py` (3 seeds; `--seeds 1 --models lenet` for a quick look).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROWS = (
    "float32",
    "int8 ptq",
    "int8 qat",
    "int4 ptq (ai-edge-quantizer)",
    "int4-weights ptq (ai-edge-quantizer)",
    "qat(bits=4)",
    "prune(0.9) + cluster(16) + qat(bits=4)",
)


def lenet():
    import keras

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="lenet_300_100",
    )


def transformer_block():
    import keras

    inputs = keras.Input((28, 28, 1))
    tokens = keras.layers.Reshape((28, 28))(inputs)
    x = keras.layers.Dense(64, name="embed")(tokens)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=32, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm1")(keras.layers.Add()([x, attended]))
    hidden = keras.layers.Dense(128, activation="relu", name="ffn1")(x)
    x = keras.layers.LayerNormalization(name="norm2")(keras.layers.Add()([x, keras.layers.Dense(64, name="ffn2")(hidden)]))
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="transformer_block")


def _models():
    from kstruct.models import example_cnn

    return {"lenet": lenet, "cnn": example_cnn, "transformer": transformer_block}


def _measure(blob: bytes, x_test, y_test) -> dict:
    import tflite_export

    predictions = tflite_export.predict(blob, x_test)
    return {
        "bytes": len(blob),
        "gzip": len(gzip.compress(blob, compresslevel=9, mtime=0)),
        "accuracy": float(np.mean(predictions.argmax(-1) == y_test)),
        "ms": tflite_export.benchmark(blob, threads=1, runs=100).median_ms,
    }


def run_seed(name: str, seed: int, float_epochs: int, epochs: int) -> dict[str, dict]:
    import keras

    import kstruct
    import tflite_export
    from kstruct.data import load_mnist_5k_splits
    from kstruct.models import compile_for_classification

    train, validation, (x_test, y_test) = load_mnist_5k_splits()
    keras.utils.set_random_seed(seed)
    model = compile_for_classification(_models()[name]())
    model.fit(*train, epochs=float_epochs, batch_size=32, verbose=0)
    calibration = train[0][:200]
    results = {
        "float32": _measure(tflite_export.convert(model, "float32"), x_test, y_test),
        "int8 ptq": _measure(tflite_export.convert(model, "int8", calibration), x_test, y_test),
        "int4 ptq (ai-edge-quantizer)": _measure(tflite_export.convert(model, "int4", calibration), x_test, y_test),
        "int4-weights ptq (ai-edge-quantizer)": _measure(tflite_export.convert(model, "int4-weights"), x_test, y_test),
    }
    for row, strategy, target in (
        ("int8 qat", "qat", "int8"),
        ("qat(bits=4)", "qat(bits=4)", "int4"),
        ("prune(0.9) + cluster(16) + qat(bits=4)", "prune(0.9) + cluster(16) + qat(bits=4)", "int4"),
    ):
        keras.utils.set_random_seed(seed + 1000)  # fine-tuning must not replay the float run's batches
        started = time.perf_counter()
        result = kstruct.optimize(
            model, strategy, train_data=train, validation_data=validation, epochs=epochs, target=target, verbose=0
        )
        results[row] = {**_measure(result.tflite, x_test, y_test), "train_s": time.perf_counter() - started}
    return results


def _summary(runs: list[dict[str, dict]]) -> dict[str, dict]:
    summary = {}
    for row in ROWS:
        values = {key: [run[row][key] for run in runs] for key in ("bytes", "gzip", "accuracy", "ms")}
        summary[row] = {key: (float(np.mean(v)), float(np.std(v))) for key, v in values.items()}
    return summary


def _table(name: str, summary: dict[str, dict], seeds: int) -> str:
    lines = [
        f"{name} ({seeds} seeds, test accuracy on the 1,000 test digits, mean +/- std)",
        "| file | raw bytes | gzip bytes | test accuracy | LiteRT 1 thread ms |",
        "|---|---|---|---|---|",
    ]
    for row, s in summary.items():
        lines.append(
            f"| {row} | {s['bytes'][0]:,.0f} | {s['gzip'][0]:,.0f} | "
            f"{100 * s['accuracy'][0]:.2f} +/- {100 * s['accuracy'][1]:.2f}% | {s['ms'][0]:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["lenet", "cnn", "transformer"], choices=["lenet", "cnn", "transformer"])
    parser.add_argument("--float-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs of each step")
    parser.add_argument("--json", help="also write the per-seed figures here")
    args = parser.parse_args()
    everything = {}
    for name in args.models:
        runs = [run_seed(name, seed, args.float_epochs, args.epochs) for seed in range(args.seeds)]
        everything[name] = runs
        print(_table(name, _summary(runs), args.seeds), flush=True)
        print(flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
