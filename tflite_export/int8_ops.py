"""Facts about LiteRT's int8 kernel set that a compressor must respect.

`INT8_ACTIVATIONS` are the Keras activations an int8 TFLite file runs as integer kernels:
ReLU and ReLU6 fused into the op before them, the others as their own int8 kernel (GELU,
HARD_SWISH, LOGISTIC, TANH, LEAKY_RELU, SOFTMAX; `silu` as LOGISTIC + MUL, `hard_sigmoid` as
ADD with ReLU6 fused, then MUL). Each was checked by converting a quantization-aware model
(kstruct's tests/quantization/test_qat_activations.py). Left out: `elu` (the converter wraps
ELU in DEQUANTIZE/QUANTIZE) and `selu`, `softplus`, `mish` (split into several int8 ops, EXP,
LOG, ..., whose ranges a quantization-aware model does not simulate).
"""

INT8_ACTIVATIONS: tuple[str, ...] = (
    "relu", "relu6", "sigmoid", "softmax", "tanh", "hard_silu", "silu", "leaky_relu", "gelu", "hard_sigmoid",
)
