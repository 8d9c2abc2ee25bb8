"""Channel pruning and block removal on MNIST-5k: do the models get smaller and faster, and what do they lose?

Two models, each trained `--epochs` epochs from the same seed:

- the example CNN (Sequential; Conv -> Flatten -> Dense);
- a residual CNN: a stem, `--blocks` residual blocks (Conv-BN-ReLU-Conv-BN + identity Add), pooled head.

Then, from the trained weights, for each of `--ratios` (30/50/70% of channels):
`prune_channels(ratio)` (masks tightening over the first 60% of the fine-tuning steps, then `strip`, the
surgery) and, against it, unstructured `prune` + `strip` at the same non-zero parameter count. On the
residual CNN, `drop_blocks(n)` follows `prune_channels` at the first ratio. Each stage fine-tunes
`--finetune` epochs. The last row trains the final small architecture from scratch for the same total
epochs. Every stage is measured in this one run, on this CPU: test accuracy, non-zero params, MACs, TFLite
float32 and int8 (full-integer) bytes, and single-image LiteRT latency on 1 thread (median of `--runs`).
MobileNetV2 (alpha 0.35, 96x96, untrained: weights=None) is measured for structure and latency only, before
and after `prune_channels(ratio)`. The CPU model and its int8-relevant flags are printed first: compare like
with like.

Run: `python benchmarks/channels.py` (3 seeds; `--seeds 1 --quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tflite_export  # noqa: E402

from kstruct import pruning  # noqa: E402
from kstruct.data import load_mnist_5k  # noqa: E402
from kstruct.models import compile_for_classification, example_cnn  # noqa: E402
from kstruct.pruning.channels_step import macs  # noqa: E402
from kstruct.pruning.prunable import prunable_weight  # noqa: E402
from kstruct.pruning.step import Prune  # noqa: E402


def cpu() -> str:
    model, flags = platform.processor() or "unknown", []
    try:
        text = open("/proc/cpuinfo").read()
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        present = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
        flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in present]
    except (OSError, StopIteration):
        pass
    return f"{model} ({', '.join(flags) or 'no AVX2'})"


def residual_cnn(width: int = 32, blocks: int = 4) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    for i in range(blocks):
        y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{i}_conv1")(x)
        y = keras.layers.BatchNormalization(momentum=0.9, name=f"b{i}_bn1")(y)
        y = keras.layers.ReLU(name=f"b{i}_relu")(y)
        y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{i}_conv2")(y)
        y = keras.layers.BatchNormalization(momentum=0.9, name=f"b{i}_bn2")(y)
        x = keras.layers.Add(name=f"b{i}_add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="out")(x), name="residual_cnn")


def measure(name: str, model: keras.Model, data, runs: int) -> dict:
    (x, _), (xt, yt) = data
    row = {"stage": name, "accuracy": float(model.evaluate(xt, yt, verbose=0)[1]) if len(xt) else float("nan"),
           "params": nonzero(model), "macs": macs(model)}
    for target in ("float32", "int8"):
        blob = tflite_export.convert(model, target, representative_data=x[:200])
        row[f"{target}_bytes"] = len(blob)
        row[f"{target}_ms"] = tflite_export.benchmark(blob, threads=1, runs=runs, warmup=10).median_ms
    return row


def nonzero(model: keras.Model) -> int:
    """Non-zero parameters: what unstructured pruning saves, and all parameters of a dense model."""
    return int(sum(np.count_nonzero(w) for w in model.get_weights()))


def equal_sparsity(model: keras.Model, params: int) -> float:
    """The kernel sparsity that leaves `model` (dense) with `params` non-zero parameters.

    `prune` zeroes only kernels (biases and BatchNorm stay), and every kernel to the same
    sparsity, so the kernels must hold `params` minus everything else.
    """
    kernels = sum(int(np.prod(getattr(layer, how.attribute).shape)) for layer in model.layers
                  if (how := prunable_weight(layer)) is not None)
    rest = nonzero(model) - kernels
    return float(np.clip(1.0 - (params - rest) / kernels, 0.0, 0.99))


def unstructured(model: keras.Model, sparsity: float, data, epochs: int) -> keras.Model:
    """`prune` + `strip` with the same schedule shape and epochs as `pruned`."""
    (x, y), _ = data
    schedule = Prune(sparsity).pruning_schedule(epochs * -(-len(x) // 64))
    masked = compile_for_classification(pruning.prune(model, schedule))
    masked.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return pruning.strip(masked)


def finetune(model: keras.Model, data, epochs: int) -> keras.Model:
    (x, y), _ = data
    compile_for_classification(model).fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def pruned(model: keras.Model, ratio: float, data, epochs: int, round_to: int) -> keras.Model:
    (x, y), _ = data
    steps = epochs * -(-len(x) // 64)
    schedule = Prune(ratio).pruning_schedule(steps)
    masked = compile_for_classification(pruning.prune_channels(model, ratio, round_to=round_to, schedule=schedule))
    masked.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return pruning.strip(masked)


def table(model_name: str, rows: list[dict]) -> str:
    base = rows[0]
    lines = [f"\n{model_name}",
             "| stage | accuracy | non-zero params | MACs | f32 KB | f32 ms | int8 KB | int8 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        accuracy = "-" if np.isnan(r["accuracy"]) else f"{r['accuracy']:.2%}"
        lines.append(
            f"| {r['stage']} | {accuracy} | {r['params']:,} ({r['params'] / base['params']:.2f}x) | "
            f"{r['macs'] / 1e6:.2f} M ({r['macs'] / base['macs']:.2f}x) | {r['float32_bytes'] / 1024:.1f} | "
            f"{r['float32_ms']:.3f} ({r['float32_ms'] / base['float32_ms']:.2f}x) | {r['int8_bytes'] / 1024:.1f} | "
            f"{r['int8_ms']:.3f} ({r['int8_ms'] / base['int8_ms']:.2f}x) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of the original models")
    parser.add_argument("--finetune", type=int, default=3, help="fine-tuning epochs per stage")
    parser.add_argument("--ratios", type=lambda text: [float(v) for v in text.split(",")], default=[0.5, 0.3, 0.7],
                        help="fractions of channels to prune; drop_blocks and from-scratch follow the first")
    parser.add_argument("--drop", type=int, default=2, help="residual blocks dropped after channel pruning")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--round-to", type=int, default=4)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds, each a full run")
    parser.add_argument("--no-mobilenet", action="store_true", help="skip MobileNetV2 (structure and latency)")
    parser.add_argument("--quick", action="store_true", help="1 epoch each, 1000 images: a smoke run")
    args = parser.parse_args()
    data = load_mnist_5k()
    if args.quick:
        (x, y), test = data
        data, args.epochs, args.finetune, args.runs = ((x[:1000], y[:1000]), test), 1, 1, 20
    print(f"CPU: {cpu()}; LiteRT 1 thread, median of {args.runs} single-image runs; keras {keras.__version__} "
          f"({keras.backend.backend()}); MNIST-5k: {len(data[0][0])} train / {len(data[1][0])} test images")
    accuracies: dict[tuple[str, str], list[float]] = {}
    for seed in range(args.seed, args.seed + args.seeds):
        keras.utils.set_random_seed(seed)
        for model_name, rows in run_models(args, data):
            print(table(f"{model_name}, seed {seed}", rows), flush=True)
            for row in rows:
                accuracies.setdefault((model_name, row["stage"]), []).append(row["accuracy"])
    if not args.no_mobilenet:
        print(table("MobileNetV2 (alpha 0.35, 96x96, weights=None; structure and latency only)",
                    mobilenet(args.ratios[0], args.round_to, args.runs)), flush=True)
    print(f"\naccuracy over {args.seeds} seed(s): mean (min - max)\n| model | stage | accuracy |\n|---|---|---|")
    for (model_name, stage), values in accuracies.items():
        print(f"| {model_name} | {stage} | {np.mean(values):.2%} ({min(values):.2%} - {max(values):.2%}) |")


def run_models(args, data):
    """Yields (model name, measured rows) for the example CNN and the residual CNN, from the current seed."""
    first = args.ratios[0]
    for model_name, build in (("example CNN", example_cnn),
                              ("residual CNN", lambda: residual_cnn(args.width, args.blocks))):
        model = finetune(build(), data, args.epochs)
        rows = [measure("original", model, data, args.runs)]
        # prune_channels and prune leave `model` as it is, so every stage starts from the same weights.
        smaller = {r: pruned(model, r, data, args.finetune, args.round_to) for r in args.ratios}
        for r in args.ratios:
            rows.append(measure(f"prune_channels({r})", smaller[r], data, args.runs))
            sparsity = equal_sparsity(model, nonzero(smaller[r]))
            rows.append(measure(f"prune({sparsity:.3f}), unstructured, non-zero params as prune_channels({r})",
                                unstructured(model, sparsity, data, args.finetune), data, args.runs))
        channels = smaller[first]
        if model_name == "residual CNN" and args.drop:
            (x, y), _ = data
            blocks = pruning.drop_blocks(compile_for_classification(channels), args.drop, criterion="loss",
                                         data=(x[-500:], y[-500:]))
            blocks = finetune(blocks, data, args.finetune)
            rows.append(measure(f"prune_channels({first}) + drop_blocks({args.drop})", blocks, data, args.runs))
            channels, total = blocks, args.epochs + 2 * args.finetune
        else:
            total = args.epochs + args.finetune
        # Pruning must earn its keep: the final small architecture, freshly initialized, trained as long.
        scratch = finetune(keras.models.clone_model(channels), data, total)
        rows.append(measure(f"same small architecture from scratch ({total} epochs)", scratch, data, args.runs))
        baseline = finetune(model, data, args.finetune)  # the same epochs without pruning, for a fair comparison
        rows.insert(1, measure(f"original + {args.finetune} epochs", baseline, data, args.runs))
        yield model_name, rows


def mobilenet(ratio: float, round_to: int, runs: int) -> list[dict]:
    """MobileNetV2 before and after `prune_channels(ratio)`: structure and latency, no accuracy (no weights).

    One fit step on random images applies the masks (ranked by l2 on the random initial weights);
    the int8 file is calibrated on the same random images.
    """
    x = np.random.default_rng(0).uniform(-1, 1, (32, 96, 96, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, 32)
    model = keras.applications.MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=10)
    masked = compile_for_classification(pruning.prune_channels(model, ratio, round_to=round_to))
    masked.fit(x, y, batch_size=32, epochs=1, verbose=0)
    data = ((x, y), (x[:0], y[:0]))
    return [measure("original", model, data, runs),
            measure(f"prune_channels({ratio})", pruning.strip(masked), data, runs)]


if __name__ == "__main__":
    main()
