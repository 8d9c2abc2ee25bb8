"""Write a trained model and a data file for the `kstruct optimize` command.

Run: .venv/bin/python examples/prepare_cli_inputs.py
Then: .venv/bin/kstruct optimize out_cli/cnn.keras --strategy "prune(2:4)" --data out_cli/digits.npz \
          --target int8 --out out_cli/pruned
"""

from pathlib import Path

import numpy as np

from kstruct.data import load_mnist_5k_splits
from kstruct.models import compile_for_classification, example_cnn

folder = Path("out_cli")
folder.mkdir(exist_ok=True)
(x_train, y_train), (x_val, y_val), (x_test, y_test) = load_mnist_5k_splits()
model = compile_for_classification(example_cnn())
model.fit(x_train, y_train, epochs=3, verbose=2)
model.save(folder / "cnn.keras")
# The validation split is what optimize measures and selects on; the test split stays out of it.
np.savez(folder / "digits.npz", x=x_train, y=y_train, x_val=x_val, y_val=y_val)
np.savez(folder / "digits_test.npz", x=x_test, y=y_test)
print(f"wrote {folder / 'cnn.keras'}, {folder / 'digits.npz'} and {folder / 'digits_test.npz'}")
