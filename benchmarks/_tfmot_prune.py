"""tfmot's side of prune_vs_tfmot.py: runs on legacy tf_keras, in its own process.

Usage: python _tfmot_prune.py BASE_WEIGHTS.npz OUT_WEIGHTS.npz EPOCHS SPARSITY END_STEP FREQUENCY
Prints one JSON line with accuracy and timings; writes the stripped weights to OUT_WEIGHTS.npz.
"""

import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

from kstruct.data import load_mnist_5k  # noqa: E402  (numpy only: no Keras 3 import)


def example_cnn():
    """The same architecture as kstruct.models.example_cnn, in tf_keras."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def compiled(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def int8_tflite(qat_model) -> bytes:
    """A tfmot QAT model converted to an integer-only TFLite file (int8 input and output), batch 1."""
    import tensorflow as tf

    traced = tf.function(lambda inputs: qat_model(inputs, training=False))
    concrete = traced.get_concrete_function(tf.TensorSpec((1, 28, 28, 1), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def timed_fit(model, x, y, epochs, callbacks=()):
    """(total fit seconds, seconds of the epochs after the first, which exclude tracing)."""
    epoch_seconds = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch_seconds.append(-time.perf_counter()),
        on_epoch_end=lambda epoch, logs: epoch_seconds.__setitem__(-1, epoch_seconds[-1] + time.perf_counter()),
    )
    started = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[*callbacks, timer])
    return time.perf_counter() - started, sum(epoch_seconds[1:])


def main():
    base_path, out_path, epochs, target, end_step, frequency = sys.argv[1:7]
    epochs, target, end_step, frequency = int(epochs), float(target), int(end_step), int(frequency)
    (x, y), (xt, yt) = load_mnist_5k()
    base = np.load(base_path)
    weights = [base[f"w{i}"] for i in range(len(base.files))]

    plain = example_cnn()
    plain.set_weights(weights)
    compiled(plain)
    plain_seconds, plain_steady = timed_fit(plain, x, y, epochs)

    model = example_cnn()
    model.set_weights(weights)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, target, begin_step=0, end_step=end_step, frequency=frequency)
    pruned = compiled(tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule))
    pruned_seconds, pruned_steady = timed_fit(pruned, x, y, epochs, [tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = compiled(tfmot.sparsity.keras.strip_pruning(pruned))
    accuracy = float(stripped.evaluate(xt, yt, verbose=0)[1])
    np.savez(out_path, **{f"w{i}": w for i, w in enumerate(stripped.get_weights())})
    print(json.dumps({
        "accuracy": accuracy,
        "plain_fit_seconds": plain_seconds,
        "train_seconds": pruned_seconds,
        "steady_epoch_overhead": pruned_steady / plain_steady if plain_steady else None,
    }))


if __name__ == "__main__":
    main()
