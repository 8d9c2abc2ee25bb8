"""Distillation after compression: a half-width student fine-tuned with and without the teacher.

    python benchmarks/distill.py [--seeds 5] [--epochs 3] [--teacher-epochs 5] [--train 4000] [--finetune 4000] [--init sliced]

The teacher is the example CNN trained on MNIST-5k. The compressed model is the
same architecture at half width (channel pruning is not built yet): with
`--init sliced` (default) it starts from the teacher's weights, keeping each
layer's half of the filters with the largest L1 norm (what channel pruning to 0.5
does); with `--init scratch` from a fresh initialization. Per seed it is trained
for `--epochs` epochs through `kstruct.optimize`, once with `distill(alpha=1)`
(labels only: plain fine-tuning) and once with `distill` (temperature 4, alpha
0.5): the same step, the same start, the same epochs, the same data (the first
`--finetune` of the teacher's training digits: compression often has less data).
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


def sliced_from(teacher, student) -> None:
    """Copies into the half-width `student` the teacher's filters with the largest L1 norm."""
    import numpy as np

    (k1, b1), (k2, b2), (k3, b3), (k4, b4) = (teacher.get_layer(n).get_weights() for n in
                                              ("conv1", "conv2", "dense1", "classifier"))
    top = lambda kernel, n: np.sort(np.argsort(-np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0))[:n])
    keep1 = top(k1, 8)
    k2 = k2[:, :, keep1, :]
    keep2 = top(k2, 16)
    k3 = k3.reshape(5, 5, 32, -1)[:, :, keep2, :].reshape(5 * 5 * 16, -1)  # Flatten of (5, 5, channels)
    keep3 = top(k3, 32)
    student.get_layer("conv1").set_weights([k1[..., keep1], b1[keep1]])
    student.get_layer("conv2").set_weights([k2[..., keep2], b2[keep2]])
    student.get_layer("dense1").set_weights([k3[:, keep3], b3[keep3]])
    student.get_layer("classifier").set_weights([k4[keep3], b4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=4000, help="training digits (of MNIST-5k's train split)")
    parser.add_argument("--finetune", type=int, default=None, help="digits the students train on (default: all)")
    parser.add_argument("--init", choices=("sliced", "scratch"), default="sliced")
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

    finetune = args.finetune or len(x)
    runs = {"plain": ("distill(epochs={e}, alpha=1)", [], []), "distilled": ("distill(epochs={e})", [], [])}
    for seed in range(args.seeds):
        for name, (strategy, keras_acc, tflite_acc) in runs.items():
            keras.utils.set_random_seed(seed)
            student = compile_for_classification(half_width_cnn())
            if args.init == "sliced":
                sliced_from(teacher, student)
            result = kstruct.optimize(
                student, strategy.format(e=args.epochs), train_data=(x[:finetune], y[:finetune]), validation_data=(xt, yt),
                teacher=teacher, target="int8", verbose=0,
            )
            keras_acc.append(result.report.final.keras_accuracy)
            tflite_acc.append(result.report.final.tflite_accuracy)
            print(f"seed {seed} {name:<9}: keras {keras_acc[-1]:.4f}  int8 {tflite_acc[-1]:.4f}", flush=True)

    if args.init == "sliced":
        probe = half_width_cnn()
        sliced_from(teacher, probe)
        start = float(compile_for_classification(probe).evaluate(xt, yt, verbose=0)[1])
        print(f"half-width student sliced from the teacher, before fine-tuning: {start:.4f}")
    print(f"\nhalf-width student ({half_width_cnn().count_params():,} params, init {args.init}), {args.epochs} epochs, "
          f"{args.seeds} seeds, {finetune} fine-tuning digits, {len(xt)} test digits")
    for name, (strategy, keras_acc, tflite_acc) in runs.items():
        print(f"{name:<9} {strategy.format(e=args.epochs):<26} keras {np.mean(keras_acc):.4f} +/- {np.std(keras_acc):.4f}"
              f"   int8 {np.mean(tflite_acc):.4f} +/- {np.std(tflite_acc):.4f}")
    plain, distilled = np.mean(runs["plain"][1]), np.mean(runs["distilled"][1])
    lost = teacher_accuracy - plain
    share = (distilled - plain) / lost if lost > 0 else float("nan")
    print(f"accuracy lost to compression {lost:+.4f}; distillation recovers {distilled - plain:+.4f} ({share:.0%})")


if __name__ == "__main__":
    main()
