"""Prune the example CNN to 75% sparsity with the Python API and write the results to out_example/.

Selection and the stage table use the validation split; the test split is used once, at the end.

Run: .venv/bin/python examples/prune_mnist.py
"""

import kstruct
import tflite_export
from kstruct.data import load_mnist_5k_splits
from kstruct.models import compile_for_classification, example_cnn

(x_train, y_train), (x_val, y_val), (x_test, y_test) = load_mnist_5k_splits()
model = compile_for_classification(example_cnn())
model.fit(x_train, y_train, epochs=3, verbose=2)

strategy = kstruct.Strategy([kstruct.Prune(0.75)])  # the same as the string "prune(0.75)"
result = kstruct.optimize(
    model,
    strategy,
    train_data=(x_train, y_train),
    validation_data=(x_val, y_val),
    epochs=2,
    target="int8",
)
print(result.report.to_text())
print(kstruct.pruning.sparsity(result.model))
print(f"test accuracy of the int8 file: {tflite_export.evaluate(result.tflite, x_test, y_test):.4f} ({len(x_test)} images)")
result.save("out_example", overwrite=True)
