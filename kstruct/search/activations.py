"""Which activations each TFLite target runs natively, as a small table.

"Natively" means the converted file runs the activation in the target's own
arithmetic: for the integer targets, as an int8 op with no DEQUANTIZE/QUANTIZE
pair around it (which would run it in float on the CPU). The int8 rows were
checked by converting a one-layer model per activation (tests/search/
test_activations.py repeats that check). The integer rows come from QAT's table
(`tflite_export.int8_ops.INT8_ACTIVATIONS`, which `qat` simulates), so `search(...) + qat` never
picks an activation that QAT leaves in float: `elu` converts to
DEQUANTIZE -> ELU -> QUANTIZE, so it is float on int8, micro and edgetpu;
`hard_silu` becomes HARD_SWISH and `leaky_relu` LEAKY_RELU, neither of which is on
the Edge TPU op list. `gelu` is left out of the gpu row: the GPU analyzer accepts
it, but delegates have refused files it called compatible (tensorflow#84043).
"""

from __future__ import annotations

from tflite_export.int8_ops import INT8_ACTIVATIONS as INT8_NATIVE

_FLOAT = ("relu", "relu6", "leaky_relu", "hard_silu", "silu", "elu", "tanh", "sigmoid", "gelu", "hard_sigmoid")


def _integer(names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` less any activation QAT would leave in float."""
    return tuple(name for name in names if name in INT8_NATIVE)


_INT8 = _integer(_FLOAT)


NATIVE_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "float32": _FLOAT,
    "dynamic": _FLOAT,
    "float16": _FLOAT,
    "int8": _INT8,
    "int16x8": _INT8,
    "gpu": ("relu", "relu6", "leaky_relu", "hard_silu", "silu", "elu", "tanh", "sigmoid", "hard_sigmoid"),
    "edgetpu": _integer(("relu", "relu6", "silu", "tanh", "sigmoid", "hard_sigmoid")),
    "micro": _integer(("relu", "relu6", "leaky_relu", "hard_silu", "silu", "tanh", "sigmoid", "hard_sigmoid")),
}

# Keras spells some activations two ways; the search uses one name for each.
ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}


def canonical(name: str) -> str:
    """The search's name for a Keras activation name (`swish` -> `silu`)."""
    return ALIASES.get(name, name)


def native_activations(target: str) -> tuple[str, ...]:
    """The activations `target` runs natively; raises ValueError listing targets."""
    if target not in NATIVE_ACTIVATIONS:
        raise ValueError(f"Expected `target` to be one of {tuple(NATIVE_ACTIVATIONS)}. Received: target={target!r}")
    return NATIVE_ACTIVATIONS[target]
