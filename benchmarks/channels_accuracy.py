"""How much accuracy does `prune_channels(0.5)` cost on the residual CNN, once the original has converged?

`channels.py` measures size and latency; its originals train only 4 epochs at a constant learning
rate, so "original + 3 epochs" keeps improving and one seed's test accuracy moves by about 2 points from
epoch to epoch. This benchmark asks the accuracy question on its own, over many seeds:

- the original residual CNN (`channels.residual_cnn`, width 32, 4 blocks) trained `--epochs`
  epochs with Adam and a cosine-decayed learning rate (1e-3 to 0), which converges;
- `original + 3 epochs`: the same model fine-tuned 3 more epochs (cosine from 1e-3), the reference;
- `prune_channels(0.5)` from the original, fine-tuned 3 epochs with the same recipe: criterion `l2`
  with the masks tightening over the first 60% of the steps (the `prune_channels` step's shape) and
  over the first 30%; criterion `bn` (30%); and `l2` (30%) fine-tuned 6 epochs;
- the stripped half-width architecture trained from scratch for `--epochs` + 3 epochs, the same recipe:
  what that architecture reaches on its own.

Accuracy only (no TFLite), so it runs on any Keras backend; each seed runs in its own process,
`--jobs` at a time. Run: `python benchmarks/channels_accuracy.py` (8 seeds), or on a GPU
machine: `KERAS_BACKEND=jax python benchmarks/channels_accuracy.py --jobs 8`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
FINETUNE = 3
# (row, criterion, fraction of the fine-tuning steps over which the masks tighten, epochs)
PRUNED = [
    ("prune_channels(0.5), l2, masks over 60%", "l2", 0.6, FINETUNE),
    ("prune_channels(0.5), l2, masks over 30%", "l2", 0.3, FINETUNE),
    ("prune_channels(0.5), bn, masks over 30%", "bn", 0.3, FINETUNE),
    ("prune_channels(0.5), l2, masks over 30%, 6 epochs", "l2", 0.3, 2 * FINETUNE),
]


def run_seed(seed: int, epochs: int, ratio: float) -> dict[str, float]:
    """Every row for one seed, in this process."""
    import keras

    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from channels import residual_cnn

    from kstruct import pruning
    from kstruct.data import load_mnist_5k
    from kstruct.pruning.schedules import PolynomialDecay

    (x, y), (x_test, y_test) = load_mnist_5k()
    steps_per_epoch = -(-len(x) // 64)

    def trained(model: keras.Model, n_epochs: int) -> keras.Model:
        decay = keras.optimizers.schedules.CosineDecay(1e-3, n_epochs * steps_per_epoch)
        model.compile(optimizer=keras.optimizers.Adam(decay), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=n_epochs, batch_size=64, verbose=0)
        return model

    def accuracy(model: keras.Model) -> float:
        return float(model.evaluate(x_test, y_test, batch_size=500, verbose=0)[1])

    def schedule(fraction: float, n_epochs: int) -> PolynomialDecay:
        ramp = max(1, int(n_epochs * steps_per_epoch * fraction))
        frequency = max(1, ramp // 10)
        return PolynomialDecay(0.0, ratio, begin_step=0, end_step=max(frequency, ramp // frequency * frequency), frequency=frequency)

    keras.utils.set_random_seed(seed)
    original = trained(residual_cnn(), epochs)
    rows = {"original": accuracy(original)}
    longer = keras.models.clone_model(original)
    longer.set_weights(original.get_weights())
    rows[f"original + {FINETUNE} epochs"] = accuracy(trained(longer, FINETUNE))
    small = None
    for name, criterion, fraction, n_epochs in PRUNED:
        masked = pruning.prune_channels(original, ratio, criterion=criterion, round_to=4, schedule=schedule(fraction, n_epochs))
        rows[name] = accuracy(trained(masked, n_epochs))
        if small is None:  # the first pruned model's architecture, for the from-scratch row
            small = pruning.strip(masked)
    scratch = trained(keras.models.clone_model(small), epochs + FINETUNE)
    rows[f"half-width architecture from scratch ({epochs + FINETUNE} epochs)"] = accuracy(scratch)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once, one process each")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the original")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(run_seed(args.worker, args.epochs, args.ratio)), flush=True)
        return

    def seed_process(seed: int) -> dict[str, float]:
        command = [sys.executable, __file__, "--worker", str(seed), "--epochs", str(args.epochs), "--ratio", str(args.ratio)]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise SystemExit(f"seed {seed} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        return json.loads(lines[-1])

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(seed_process, range(args.seeds)))
    import keras

    print(f"residual CNN on MNIST-5k (4000 train / 1000 test), keras {keras.__version__} ({keras.backend.backend()}), "
          f"{args.seeds} seeds; test accuracy")
    print("| row | mean | std | min | max |\n|---|---|---|---|---|")
    for row in results[0]:
        values = [result[row] for result in results]
        print(f"| {row} | {statistics.mean(values):.2%} | {statistics.stdev(values) if len(values) > 1 else 0:.2%} | "
              f"{min(values):.2%} | {max(values):.2%} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
