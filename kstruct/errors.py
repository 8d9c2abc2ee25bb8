"""kstruct's error hierarchy, so callers can catch what kstruct raises on bad input."""


class KstructError(Exception):
    """Base class of every error kstruct raises on purpose."""


class UnsupportedModelError(KstructError, TypeError):
    """The model is of a kind kstruct cannot rewrite (for example a subclassed model)."""


class StrategyError(KstructError, ValueError):
    """A strategy string or step could not be parsed or has invalid arguments."""


class DataError(KstructError, ValueError):
    """Training or validation data does not fit the model."""


class PruningError(KstructError, RuntimeError):
    """Pruning did not happen as asked (for example the mask never updated)."""


class DistillationError(KstructError, ValueError):
    """A teacher that cannot teach this student (outputs or inputs that do not match)."""


class ModelFileError(KstructError, ValueError):
    """A model file that cannot be loaded as it is; the message says why and what to do.

    `reason` lets a caller name its own fix: "code" (the file carries Python code, refused in
    safe mode), "unknown_class" (a custom class whose module was not imported), else None;
    `detail` is Keras's own sentence, where there is one.
    """

    def __init__(self, message: str, *, reason: str | None = None, detail: str = ""):
        super().__init__(message)
        self.reason, self.detail = reason, detail


class FactorizationError(KstructError, ValueError):
    """Low-rank factorization found nothing to do (no layer it knows, or none it would make cheaper)."""


class DistributionError(KstructError, ValueError):
    """A `distribution=` that does not fit the backend (a tf.distribute strategy off TensorFlow, a
    keras.distribution one off JAX) or is not a distribution at all."""
