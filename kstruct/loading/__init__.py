"""Loading model files: Keras 3 `.keras`, and tf_keras `.keras` and `.h5` (tfmot wrappers included)."""

from kstruct.loading.load import load_model

__all__ = ["load_model"]
