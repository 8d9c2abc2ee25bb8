"""The demo: the example CNN on real handwritten digits, trained, then optimized for a phone."""

from __future__ import annotations

import os

from kstruct.data import load_mnist_5k_splits
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

    The data is split three ways: the model trains on the training split, the
    stage table is measured on the validation split (what a search would select
    on), and the test split is touched once, at the end, for the figures reported
    as test accuracy (also in `report.json` under `settings.test`).

    Prints Keras's progress bars, one line per stage, the stage table and the test
    figures; writes `model.keras`, `model.tflite`, `report.json`, `report.md` and the figures
    to `output_dir`.
    """
    import keras
    import tflite_export

    from kstruct.outputs import check_can_write

    check_can_write(output_dir, overwrite=overwrite)
    keras.utils.set_random_seed(seed)  # the same numbers on every run of the demo
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_mnist_5k_splits()
    print(
        f"kstruct demo: MNIST-5k, {len(x_train)} training, {len(x_val)} validation and {len(x_test)} test "
        "images (bundled)"
    )
    model = compile_for_classification(example_cnn())
    print(f"kstruct demo: training the example CNN for {base_epochs} epochs")
    model.fit(x_train, y_train, epochs=base_epochs, batch_size=32, verbose=2)
    print(f"kstruct demo: optimizing with '{strategy}' for target {target} (measured on the validation split)")
    result = optimize(
        model,
        strategy,
        train_data=(x_train, y_train),
        validation_data=(x_val, y_val),
        epochs=epochs,
        target=target,
        verbose=2,
    )
    test = {
        "images": int(len(x_test)),
        "original_keras_accuracy": float(model.evaluate(x_test, y_test, verbose=0)[1]),
        "final_keras_accuracy": float(
            (result.model.predict(x_test, verbose=0).argmax(-1) == y_test).mean()
        ),
        "final_tflite_accuracy": tflite_export.evaluate(result.tflite, x_test, y_test),
    }
    result.report.settings["test"] = test
    result.save(output_dir, overwrite=overwrite)
    print()
    print(result.report.to_text())
    print(
        f"\nkstruct demo: test split ({test['images']} images, unused until now): original "
        f"{test['original_keras_accuracy']:.4f} (keras); final {test['final_keras_accuracy']:.4f} (keras), "
        f"{test['final_tflite_accuracy']:.4f} ({target} tflite)"
    )
    print(f"kstruct demo: wrote model.keras, model.tflite, report.json, report.md and figures to {output_dir}/")
    return result
