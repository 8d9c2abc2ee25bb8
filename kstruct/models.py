"""Small reference models used by the demo, the tests and the benchmarks."""

from __future__ import annotations

import keras


def example_cnn(input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """The example CNN: two conv blocks and two Dense layers (about 57k parameters).

    Dense layers hold most of the parameters, as in many small vision models, which
    is what makes magnitude pruning visible in the gzipped file size.
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense1"),
            keras.layers.Dense(num_classes, activation="softmax", name="classifier"),
        ],
        name="example_cnn",
    )


def compile_for_classification(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compiles `model` with Adam and sparse categorical cross-entropy; returns it."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
