"""The demo: the example CNN on real handwritten digits, trained, then optimized for a phone."""

from __future__ import annotations

import os

from kstruct.data import load_mnist_5k
from kstruct.models import compile_for_classification, example_cnn
from kstruct.pipeline import OptimizationResult, optimize

DEMO_STRATEGY = "prune(0.75) + qat"


def run_demo(
    output_dir: str | os.PathLike = "out",
    *,
    strategy: str = DEMO_STRATEGY,
    target: str = "int8",
    base_epochs: int = 3,
    epochs: int = 2,
    overwrite: bool = False,
    seed: int = 0,
) -> OptimizationResult:
    """Trains the example CNN on MNIST-5k, optimizes it with `strategy`, writes the results.

    Prints Keras's progress bars, one line per stage and the stage table; writes
    `model.keras`, `model.tflite`, `report.json`, `report.md` and the figures to `output_dir`.
    """
    import keras

    keras.utils.set_random_seed(seed)  # the same numbers on every run of the demo
    (x_train, y_train), (x_test, y_test) = load_mnist_5k()
    print(f"kstruct demo: MNIST-5k, {len(x_train)} training and {len(x_test)} test images (bundled)")
    model = compile_for_classification(example_cnn())
    print(f"kstruct demo: training the example CNN for {base_epochs} epochs")
    model.fit(x_train, y_train, epochs=base_epochs, batch_size=32, verbose=2)
    print(f"kstruct demo: optimizing with '{strategy}' for target {target}")
    result = optimize(
        model,
        strategy,
        train_data=(x_train, y_train),
        validation_data=(x_test, y_test),
        epochs=epochs,
        target=target,
        output_dir=output_dir,
        overwrite=overwrite,
        verbose=2,
    )
    print()
    print(result.report.to_text())
    print(f"\nkstruct demo: wrote model.keras, model.tflite, report.json, report.md and figures to {output_dir}/")
    return result
