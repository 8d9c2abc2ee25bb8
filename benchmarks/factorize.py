"""Low-rank factorization on MNIST-5k: smaller and faster on LiteRT, and at what accuracy, against channel pruning.

Three models, each trained `--epochs` epochs from the same seed on the 4,000 training digits (the 1,000
test digits are used once, for the accuracy column, never to train or choose):

- an MLP 784-512-512-10;
- the example CNN (`kstruct.models.example_cnn`);
- a small transformer block on a sequence task (each digit read as 28 rows of 28 pixels): a Conv1D
  embedding to 64, MultiHeadAttention (4 heads of 16), a 4x feed-forward (Dense 256 -> Dense 64), each
  with a residual Add and LayerNormalization, average pooling, a softmax classifier.

Then, from the trained weights: each of `--stages`, `factorize(...)` steps in the strategy grammar (default
`factorize(0.25)` and `factorize(0.5)`; `kstruct.factorize.decompose`, the step's by-hand door, with the
step's rank or energy and layers, then `--finetune` epochs; with `distill=true` the fine-tuning learns from
the trained original as teacher, `kstruct.distillation.distiller` at its default temperature and alpha),
and `prune_channels` (masks over the first 60% of the same fine-tuning epochs, then the surgery) at the
ratio whose stripped model has the parameters of the first stage, where the model has a channel group to
prune. The original trained `--finetune` more
epochs is the accuracy every fine-tuned stage is held to (the same total epochs). Every stage is measured
in this one run, on this CPU: test accuracy, parameters, MACs (Dense and convolutions, and the attention's
projections and score/value products), TFLite float32 and int8 (full-integer, post-training, 200
calibration digits) bytes, and single-image LiteRT latency on 1 thread (median of `--runs`).

Run: `python benchmarks/factorize.py` (3 seeds; `--seeds 1 --quick` for a smoke run;
`--models "transformer block" --stages "factorize(0.25);factorize(0.25, distill=true)"` for one model
and other stages).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tflite_export  # noqa: E402

from channels import cpu, finetune, pruned  # noqa: E402
from kstruct import Strategy, factorize, pruning  # noqa: E402
from kstruct.data import load_mnist_5k  # noqa: E402
from kstruct.distillation import distiller  # noqa: E402
from kstruct.engine.macs import macs  # noqa: E402
from kstruct.factorize import Factorize  # noqa: E402
from kstruct.models import compile_for_classification, example_cnn  # noqa: E402
from kstruct.pruning.channels import channel_wrappers, strip_channels  # noqa: E402
from kstruct.pruning.step import Prune  # noqa: E402

STAGES = "factorize(0.25);factorize(0.5)"


def mlp() -> keras.Model:
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(512, activation="relu", name="dense1"),
        keras.layers.Dense(512, activation="relu", name="dense2"),
        keras.layers.Dense(10, activation="softmax", name="classifier"),
    ], name="mlp")


def transformer(width: int = 64, heads: int = 4) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    rows = keras.layers.Reshape((28, 28), name="rows")(inputs)
    x = keras.layers.Conv1D(width, 3, padding="same", name="embed")(rows)
    attended = keras.layers.MultiHeadAttention(heads, width // heads, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm1")(keras.layers.Add(name="add1")([x, attended]))
    f = keras.layers.Dense(4 * width, activation="relu", name="ffn_in")(x)
    f = keras.layers.Dense(width, name="ffn_out")(f)
    x = keras.layers.LayerNormalization(name="norm2")(keras.layers.Add(name="add2")([x, f]))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="classifier")(x), name="transformer")


MODELS = {"MLP 784-512-512-10": mlp, "example CNN": example_cnn, "transformer block": transformer}


def attention_macs(model: keras.Model) -> int:
    """What `kstruct.engine.macs` leaves out: MultiHeadAttention's projections and its two products."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.MultiHeadAttention):
            (_, steps, width), heads, key = layer.output.shape, layer.num_heads, layer.key_dim
            total += steps * 4 * width * heads * key + 2 * steps * steps * heads * key
    return total


def measure(name: str, model: keras.Model, data, runs: int) -> dict:
    (x, _), (xt, yt) = data
    row = {"stage": name, "accuracy": float(model.evaluate(xt, yt, verbose=0)[1]),
           "params": int(model.count_params()), "macs": macs(model) + attention_macs(model)}
    for target in ("float32", "int8"):
        blob = tflite_export.convert(model, target, representative_data=x[:200])
        row[f"{target}_bytes"] = len(blob)
        row[f"{target}_ms"] = tflite_export.benchmark(blob, threads=1, runs=runs, warmup=10).median_ms
    return row


def factorize_step(text: str) -> Factorize:
    steps = Strategy.parse(text).steps
    if len(steps) != 1 or not isinstance(steps[0], Factorize):
        raise SystemExit(f"Expected one factorize(...) step per stage. Received: {text!r}")
    return steps[0]


def factorized(model: keras.Model, step: Factorize, data, epochs: int) -> keras.Model:
    """`model` decomposed as `step` says, then fine-tuned (from `model` as teacher with `distill=true`)."""
    student = factorize.decompose(model, rank=step.rank, energy=step.energy, layers=step.layers,
                                  only_if_cheaper=step.only_if_cheaper)
    if not step.distill:
        return finetune(student, data, epochs)
    (x, y), _ = data
    distiller(model, compile_for_classification(student)).fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return student


def channel_params(model: keras.Model, ratio: float) -> int:
    """Parameters of `model` after `prune_channels(ratio)`'s surgery (masks set at once, untrained)."""
    masked = pruning.prune_channels(model, ratio, schedule=Prune(ratio, schedule="constant").pruning_schedule(1))
    for wrapper in channel_wrappers(masked):
        wrapper.mask_now(ratio)
    return int(strip_channels(masked).count_params())


def equal_ratio(model: keras.Model, params: int) -> float | None:
    """The channel ratio (to 0.01) whose pruned model has about `params` parameters, or None when
    `prune_channels` cannot get there (its groups frozen, or too few of them)."""
    if not pruning.channel_groups(model).prunable:
        return None
    low, high = 0.0, 0.95
    if channel_params(model, high) > params:
        return None
    while high - low > 0.01:
        middle = (low + high) / 2
        low, high = (middle, high) if channel_params(model, middle) > params else (low, middle)
    return round(high, 2)


def table(model_name: str, rows: list[dict]) -> str:
    base = rows[0]
    lines = [f"\n{model_name}",
             "| stage | accuracy | params | MACs | f32 KB | f32 ms | int8 KB | int8 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['accuracy']:.2%} | {r['params']:,} ({r['params'] / base['params']:.2f}x) | "
            f"{r['macs'] / 1e6:.3f} M ({r['macs'] / base['macs']:.2f}x) | {r['float32_bytes'] / 1024:.1f} | "
            f"{r['float32_ms']:.4f} ({r['float32_ms'] / base['float32_ms']:.2f}x) | {r['int8_bytes'] / 1024:.1f} | "
            f"{r['int8_ms']:.4f} ({r['int8_ms'] / base['int8_ms']:.2f}x) |"
        )
    return "\n".join(lines)


def run_model(model_name: str, args, data) -> list[dict]:
    model = finetune(MODELS[model_name](), data, args.epochs)
    rows = [measure("original", model, data, args.runs)]
    smaller = {text: factorized(model, factorize_step(text), data, args.finetune) for text in args.stages.split(";")}
    longer = keras.models.clone_model(model)
    longer.set_weights(model.get_weights())
    rows.append(measure(f"original + {args.finetune} epochs", finetune(longer, data, args.finetune), data, args.runs))
    for text, smaller_model in smaller.items():
        rows.append(measure(text, smaller_model, data, args.runs))
    first = next(iter(smaller))
    ratio = equal_ratio(model, smaller[first].count_params())
    if ratio is None:
        frozen = pruning.channel_groups(model).frozen
        print(f"{model_name}: prune_channels cannot reach the parameters of {first} "
              f"({len(frozen)} frozen group(s))", flush=True)
    else:
        channels = pruned(model, ratio, data, args.finetune, round_to=1)
        row = measure(f"prune_channels({ratio}), params as {first}", channels, data, args.runs)
        rows.append({**row, "group": "prune_channels"})  # its ratio differs by seed: one summary line
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of the original models")
    parser.add_argument("--finetune", type=int, default=3, help="fine-tuning epochs per stage")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    parser.add_argument("--stages", default=STAGES, help="';'-separated factorize(...) steps (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds, each a full run")
    parser.add_argument("--quick", action="store_true", help="1 epoch each, 1000 images: a smoke run")
    args = parser.parse_args()
    data = load_mnist_5k()
    if args.quick:
        (x, y), test = data
        data, args.epochs, args.finetune, args.runs = ((x[:1000], y[:1000]), test), 1, 1, 20
    print(f"CPU: {cpu()}; LiteRT 1 thread, median of {args.runs} single-image runs; keras {keras.__version__} "
          f"({keras.backend.backend()}); MNIST-5k: {len(data[0][0])} train / {len(data[1][0])} test images; "
          f"{args.epochs} epochs, then {args.finetune} of fine-tuning per stage")
    summary: dict[tuple[str, str], list[dict]] = {}
    for seed in range(args.seed, args.seed + args.seeds):
        for model_name in args.models.split(","):
            keras.utils.set_random_seed(seed)
            rows = run_model(model_name, args, data)
            print(table(f"{model_name}, seed {seed}", rows), flush=True)
            for row in rows:
                summary.setdefault((model_name, row.get("group", row["stage"])), []).append({**row, "base": rows[0]})
    print(f"\nover {args.seeds} seed(s): mean (min - max); ratios to the original of the same seed")
    print("| model | stage | test accuracy | params | MACs | f32 / int8 KB | f32 latency | int8 latency |")
    print("|---|---|---|---|---|---|---|---|")
    for (model_name, stage), rows in summary.items():
        accuracy = [r["accuracy"] for r in rows]
        ratio = lambda key: np.mean([r[key] / r["base"][key] for r in rows])  # noqa: E731
        print(f"| {model_name} | {stage} | {np.mean(accuracy):.2%} ({min(accuracy):.2%} - {max(accuracy):.2%}) | "
              f"{rows[0]['params']:,} ({ratio('params'):.2f}x) | {ratio('macs'):.2f}x | "
              f"{np.mean([r['float32_bytes'] for r in rows]) / 1024:.0f} / {np.mean([r['int8_bytes'] for r in rows]) / 1024:.0f} | "
              f"{ratio('float32_ms'):.2f}x | {ratio('int8_ms'):.2f}x |")


if __name__ == "__main__":
    main()
