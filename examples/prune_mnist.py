"""Prune the example CNN to 75% sparsity with the Python API and write the results to out_example/.

Run: .venv/bin/python examples/prune_mnist.py
"""

import kstruct
from kstruct.data import load_mnist_5k
from kstruct.models import compile_for_classification, example_cnn

(x_train, y_train), (x_test, y_test) = load_mnist_5k()
model = compile_for_classification(example_cnn())
model.fit(x_train, y_train, epochs=3, verbose=2)

strategy = kstruct.Strategy([kstruct.Prune(0.75)])  # the same as the string "prune(0.75)"
result = kstruct.optimize(
    model,
    strategy,
    train_data=(x_train, y_train),
    validation_data=(x_test, y_test),
    epochs=2,
    target="int8",
)
print(result.report.to_text())
print(kstruct.pruning.sparsity(result.model))
result.save("out_example", overwrite=True)
