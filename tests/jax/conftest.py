"""The JAX subset: `make test` runs it as `KERAS_BACKEND=jax pytest -m jax tests/jax`.

Every test here is marked `jax` and (but for test_steps.py's registry check) skipped on other backends, so the TensorFlow
run of the whole suite (`-m "not jax"`) does not pay for it twice.
"""

import keras
import pytest

requires_jax = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason=f"runs on the JAX backend (KERAS_BACKEND=jax, as `make test` sets); this is {keras.backend.backend()!r}",
)
