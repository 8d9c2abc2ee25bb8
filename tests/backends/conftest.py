"""The core subset run again off TensorFlow: `make test` runs it as `KERAS_BACKEND=jax pytest -m backends
tests/backends`, then once more with KERAS_BACKEND=torch.

Every test here is marked `backends` and (but for test_steps.py's registry check) skipped on TensorFlow, so the
TensorFlow run of the whole suite (`-m "not backends"`) does not pay for it twice.
"""

import keras
import pytest

BACKEND = keras.backend.backend()

off_tensorflow = pytest.mark.skipif(
    BACKEND not in ("jax", "torch"),
    reason=f"runs on the JAX or PyTorch backend (KERAS_BACKEND=jax or torch, as `make test` sets); this is {BACKEND!r}",
)
