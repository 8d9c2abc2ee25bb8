"""Distillation after compression: a half-width student fine-tuned with and without the teacher.

    python benchmarks/distill.py [--seeds 5] [--epochs 3] [--teacher-epochs 5] [--train 4000]

The teacher is the example CNN trained on MNIST-5k. The compressed model is the
same architecture at half width (channel pruning is not built yet), trained from
the same initialization per seed for `--epochs` epochs through `kstruct.optimize`,
once with `distill(alpha=1)` (labels only: plain fine-tuning) and once with
`distill` (temperature 4, alpha 0.5): the same step, the same epochs, the same data.
Prints the teacher's accuracy, both students' mean +/- std over seeds (Keras and
int8 TFLite on the held-out test digits), and the share of the accuracy lost to
compression that distillation recovers: (distilled - plain) / (teacher - plain).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def half_width_cnn():
    import keras

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="dense1"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ],
        name="half_width_cnn",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=4000, help="training digits (of MNIST-5k's train split)")
    args = parser.parse_args()

    import keras
    import numpy as np

    import kstruct
    from kstruct.data import load_mnist_5k
    from kstruct.models import compile_for_classification, example_cnn

    (x, y), (xt, yt) = load_mnist_5k()
    x, y = x[: args.train], y[: args.train]
    keras.utils.set_random_seed(0)
    teacher = compile_for_classification(example_cnn())
    teacher.fit(x, y, epochs=args.teacher_epochs, batch_size=32, verbose=0)
    teacher_accuracy = float(teacher.evaluate(xt, yt, verbose=0)[1])
    print(f"teacher (example CNN, {teacher.count_params():,} params): {teacher_accuracy:.4f}")

    runs = {"plain": ("distill(epochs={e}, alpha=1)", [], []), "distilled": ("distill(epochs={e})", [], [])}
    for seed in range(args.seeds):
        for name, (strategy, keras_acc, tflite_acc) in runs.items():
            keras.utils.set_random_seed(seed)
            student = compile_for_classification(half_width_cnn())
            result = kstruct.optimize(
                student, strategy.format(e=args.epochs), train_data=(x, y), validation_data=(xt, yt),
                teacher=teacher, target="int8", verbose=0,
            )
            keras_acc.append(result.report.final.keras_accuracy)
            tflite_acc.append(result.report.final.tflite_accuracy)
            print(f"seed {seed} {name:<9}: keras {keras_acc[-1]:.4f}  int8 {tflite_acc[-1]:.4f}", flush=True)

    print(f"\nhalf-width student ({half_width_cnn().count_params():,} params), {args.epochs} epochs, "
          f"{args.seeds} seeds, {len(x)} training digits, {len(xt)} test digits")
    for name, (strategy, keras_acc, tflite_acc) in runs.items():
        print(f"{name:<9} {strategy.format(e=args.epochs):<26} keras {np.mean(keras_acc):.4f} +/- {np.std(keras_acc):.4f}"
              f"   int8 {np.mean(tflite_acc):.4f} +/- {np.std(tflite_acc):.4f}")
    plain, distilled = np.mean(runs["plain"][1]), np.mean(runs["distilled"][1])
    lost = teacher_accuracy - plain
    share = (distilled - plain) / lost if lost > 0 else float("nan")
    print(f"accuracy lost to compression {lost:+.4f}; distillation recovers {distilled - plain:+.4f} ({share:.0%})")


if __name__ == "__main__":
    main()
