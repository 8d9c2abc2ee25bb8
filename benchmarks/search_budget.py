"""Structure search under half the example CNN's int8 latency, on MNIST-5k.

    python benchmarks/search_budget.py [--trials 12] [--epochs 3] [--tuner random] [--from-scratch]

The base model trains `--epochs` epochs; the space is derived from it, so every
trial starts from the base's weights (sliced by filter L1 norm where a layer
shrinks) and trains `--epochs` epochs too, on the same data with the same
optimizer. Because the trials' starting weights have seen `--epochs` epochs
already, the base is also shown after `--epochs` more epochs of its own.
`--from-scratch` derives the space from an untrained copy instead (trials and base
then start from the same initialization).

Prints the LiteRT latency floor (a one-op file) and the cheapest structure in the
space, which decide whether half the base latency is reachable at all (if not, the
search falls back to half the base int8 size); the base's and the best trial's
accuracy (Keras and int8 TFLite) on the held-out test digits; the search's
overhead (wall time outside `fit`), and its memory over trials.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tuner", default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--from-scratch", action="store_true", help="trials start untrained, not from the base")
    args = parser.parse_args()

    import keras
    import tflite_export

    from kstruct.data import load_mnist_5k
    from kstruct.models import compile_for_classification, example_cnn
    from kstruct.search import BudgetError, run, space

    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = load_mnist_5k()
    n_val = len(x) // 8
    train, validation = (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])

    untrained = compile_for_classification(example_cnn())
    base = compile_for_classification(example_cnn())
    base.set_weights(untrained.get_weights())
    start = time.perf_counter()
    base.fit(*train, validation_data=validation, epochs=args.epochs, batch_size=32, verbose=0)
    base_fit_s = time.perf_counter() - start
    base_blob = tflite_export.convert(base, "int8", x[:200])
    base_latency = tflite_export.benchmark(base_blob, runs=args.latency_runs).median_ms
    print(f"base example_cnn: {base.count_params()} params, int8 {len(base_blob)} bytes, {base_latency:.4f} ms "
          f"(LiteRT CPU, 1 thread, median of {args.latency_runs}); trained {args.epochs} epochs in {base_fit_s:.1f} s")

    hypermodel = space(untrained if args.from_scratch else base, target="int8")
    print(f"trials start from the {'untrained copy' if args.from_scratch else 'trained base'}'s weights "
          f"and train {args.epochs} epochs each")
    reachable = latency_floor(hypermodel, base_latency, x, args.latency_runs)

    def search(budget):
        print(f"\nsearch: {args.trials} trials, tuner={args.tuner}, {args.epochs} epochs each, budget "
              + ", ".join(f"{k} <= {v:.4g}" for k, v in budget.items()))
        directory = tempfile.mkdtemp(prefix="kstruct-bench-search-")
        try:
            return run(hypermodel, train, validation, budget=budget, target="int8", tuner=args.tuner,
                       max_trials=args.trials, epochs=args.epochs, directory=directory, seed=args.seed,
                       latency_runs=args.latency_runs)
        except BudgetError as error:
            print(f"kstruct: {error}")
            print(error.result.table())
            print(error.result.summary())
            return None

    result = search({"latency_ms": base_latency / 2})
    if result is None:
        print("half the base int8 latency is out of reach here" + ("" if reachable else
              " (the cheapest structure in the space is slower, see above)")
              + "; searching under half the base int8 size instead.")
        result = search({"tflite_bytes": len(base_blob) // 2})
        if result is None:
            raise SystemExit(1)
    report(result, base, base_blob, base_latency, x, x_test, y_test, args, train, validation)


def latency_floor(hypermodel, base_latency: float, x, runs: int) -> bool:
    """Prints what no model can beat here, and the cheapest structure the space holds;
    returns whether that structure fits half the base latency."""
    import keras
    import keras_tuner
    import numpy as np
    import tflite_export

    from kstruct.search.budget import measure

    one_op = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    floor = tflite_export.benchmark(tflite_export.convert(one_op, "int8", np.linspace(-1, 1, 16)[:, None]), runs=runs)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    for choice in hypermodel.widths:
        hp.values[choice.name] = min(hypermodel.width_values)
    for choice in hypermodel.depths:
        hp.values[choice.name] = False
    cheapest, _ = measure(hypermodel.build(hp), "int8", x[:16], latency_runs=runs)
    print(f"latency floor: a one-op int8 file (FULLY_CONNECTED 1x1) takes {floor.median_ms:.4f} ms per invoke "
          f"({100 * floor.median_ms / base_latency:.0f}% of the base); the cheapest structure in the space (every "
          f"width x{min(hypermodel.width_values)}, every droppable block dropped) takes {cheapest.latency_ms:.4f} ms, "
          f"{cheapest.tflite_bytes} B; half the base latency is {base_latency / 2:.4f} ms")
    return cheapest.latency_ms <= base_latency / 2


def report(result, base, base_blob, base_latency, x, x_test, y_test, args, train, validation) -> None:
    import keras
    import tflite_export

    print(result.table())
    best = result.best_model
    best_blob = tflite_export.convert(best, "int8", x[:200])
    base_acc = base.evaluate(x_test, y_test, verbose=0)[1]
    best_acc = best.evaluate(x_test, y_test, verbose=0)[1]
    print(f"test accuracy, Keras:       base {base_acc:.4f}   best within budget {best_acc:.4f} "
          f"(trial {result.best_trial.trial_id}, {result.best_trial.epochs} epochs; base {args.epochs})")
    print(f"test accuracy, int8 TFLite: base {tflite_export.evaluate(base_blob, x_test, y_test):.4f}   "
          f"best within budget {tflite_export.evaluate(best_blob, x_test, y_test):.4f}")
    if not args.from_scratch:
        more = keras.models.clone_model(base)
        more.set_weights(base.get_weights())
        more.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        more.fit(*train, validation_data=validation, epochs=args.epochs, batch_size=32, verbose=0)
        print(f"base after {args.epochs} more epochs ({2 * args.epochs} in all, as many as the best trial's "
              f"weights have seen): test accuracy {more.evaluate(x_test, y_test, verbose=0)[1]:.4f}")
    print(f"int8: base {len(base_blob)} B, {base_latency:.4f} ms; best {len(best_blob)} B "
          f"(measured in the search before training: {result.best_trial.tflite_bytes} B), "
          f"{result.best_trial.latency_ms:.4f} ms; budget {result.budget}")
    stopped = sum(t.stopped_early for t in result.trials)
    print(f"trials stopped early (behind the best curve): {stopped}")
    print(result.summary())
    outside = result.wall_seconds - result.train_seconds
    print(f"overhead {100 * result.overhead:.1f}% (target < 15%): {outside:.1f} s outside fit, "
          f"{outside / len(result.trials):.2f} s per trial")
    rss = result.rss_mb_after_trials
    print(f"RSS after each trial: first {rss[0]:.0f} MiB, last {rss[-1]:.0f} MiB, max {max(rss):.0f} MiB "
          f"(growth {rss[-1] - rss[0]:+.0f} MiB over {len(rss)} trials); peak RSS {result.peak_rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()
