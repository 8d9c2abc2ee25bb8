"""What the user asks for: the quantization scheme (`quantize(model, scheme="int8")`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantizationScheme:
    """How a model is quantized for training.

    Attributes:
        name: the name `quantize(scheme=...)` accepts.
        ema_decay: decay of the moving min/max of activation ranges; the first
            training batch sets them, so short fine-tuning runs start calibrated.
        fold_batch_norm: fold each BatchNormalization into the Conv/Dense before it,
            as TFLite runs it (False keeps it as a float layer, left out of int8).
    """

    name: str = "int8"
    ema_decay: float = 0.99
    fold_batch_norm: bool = True

    def __post_init__(self):
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"Expected `ema_decay` in [0, 1). Received: ema_decay={self.ema_decay}")


SCHEMES: dict[str, QuantizationScheme] = {
    # Full-integer int8 as TFLite runs it: symmetric narrow-range weights (per-channel
    # for convolutions, per-tensor for Dense and Conv2DTranspose), asymmetric
    # per-tensor activations.
    "int8": QuantizationScheme(),
}


def get_scheme(scheme: str | QuantizationScheme) -> QuantizationScheme:
    """A scheme by name, or the scheme itself."""
    if isinstance(scheme, QuantizationScheme):
        return scheme
    if scheme not in SCHEMES:
        raise ValueError(f"Expected `scheme` to be one of {sorted(SCHEMES)} or a QuantizationScheme. Received: scheme={scheme!r}")
    return SCHEMES[scheme]
