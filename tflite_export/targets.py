"""The export targets as data: one row per target, read by `convert` and `check`.

Each row says how to configure the TFLite converter (optimizations, op set,
whether calibration data is needed), which I/O dtypes the file may have, and which
runtime it is meant for. Adding a target is adding a row here, plus an op table
when the runtime only implements some ops.
"""

from __future__ import annotations

import dataclasses

from tflite_export.errors import ExportError


@dataclasses.dataclass(frozen=True)
class Target:
    """How one named target is produced and where it runs.

    Attributes:
        name: the name users pass as `target=`.
        summary: one line for docs and `--help`.
        runtime: the LiteRT backend or device the file is meant for.
        quantize: `None` (float32), `"dynamic"`, `"float16"`, `"int8"`, `"int16x8"`, or
            `"int4"` / `"int4-weights"` (made by ai-edge-quantizer from the float32 file, see `int4`).
        io_dtypes: allowed input/output dtypes; the first is the default.
        needs_data: whether calibration (`representative_data`) is required.
        batch_one: whether only `batch_size=1` is allowed.
        op_check: `None`, `"gpu"`, `"edgetpu"` or `"micro"`: the check run on the file.
    """

    name: str
    summary: str
    runtime: str
    quantize: str | None
    io_dtypes: tuple[str, ...]
    needs_data: bool = False
    batch_one: bool = False
    op_check: str | None = None


_TARGET_ROWS = (
    Target("float32", "float32 weights and activations", "CPU (XNNPACK), any delegate", None, ("float32",)),
    Target("dynamic", "int8 weights, float activations (dynamic-range quantization)", "CPU (XNNPACK)", "dynamic", ("float32",)),
    Target("float16", "float16 weights, float32 compute on CPU", "CPU, GPU delegate", "float16", ("float32",)),
    Target("int8", "full-integer int8 weights and activations", "CPU (XNNPACK int8), NNAPI, NPU", "int8", ("int8", "uint8"), needs_data=True),
    Target("int16x8", "int16 activations, int8 weights", "CPU (reference kernels)", "int16x8", ("float32", "int16"), needs_data=True),
    Target("gpu", "float16 weights, static shapes, only ops the GPU delegate runs", "LiteRT GPU accelerator", "float16", ("float32",), op_check="gpu"),
    Target("edgetpu", "full-integer, batch 1, ops checked against the Edge TPU list", "Coral Edge TPU (after edgetpu_compiler)", "int8", ("uint8", "int8"), needs_data=True, batch_one=True, op_check="edgetpu"),
    Target("micro", "full-integer, static shapes, only ops TFLite Micro implements", "TFLite Micro (microcontrollers)", "int8", ("int8", "uint8"), needs_data=True, batch_one=True, op_check="micro"),
    Target("int4", "4-bit weights (Dense, Conv), int8 activations, by ai-edge-quantizer", "CPU (XNNPACK)", "int4", ("int8",), needs_data=True),
    Target("int4-weights", "4-bit weights dequantized to float, float activations, by ai-edge-quantizer", "CPU (XNNPACK)", "int4-weights", ("float32",)),
)

TARGET_TABLE: dict[str, Target] = {t.name: t for t in _TARGET_ROWS}
TARGETS: tuple[str, ...] = tuple(TARGET_TABLE)


def get_target(name: str) -> Target:
    """Returns the row for `name`; raises `ExportError` listing valid names."""
    if name not in TARGET_TABLE:
        raise ExportError(f"Expected `target` to be one of {TARGETS}. Received: target={name!r}")
    return TARGET_TABLE[name]


# Ops the LiteRT/TFLite GPU delegate accepts: the cases of
# `CheckGpuDelegateCompatibility` in tensorflow/lite/tools/versioning/gpu_compatibility.cc
# (tensorflow/tensorflow, read at commit 03a5e4e). Per-op conditions (strides,
# broadcasting, ranks) are not re-checked here; the runtime check on a GPU is the proof.
# We keep our own table because `tf.lite.experimental.Analyzer(gpu_compatibility=True)`
# in TF 2.21 reports "compatible" even for CONV_3D, TOPK_V2 and Flex ops.
GPU_OPS = frozenset(
    """
    ABS ADD ADD_N ATAN2 AVERAGE_POOL_2D BATCH_MATMUL CAST CEIL CONCATENATION CONV_2D COS
    CUMSUM DENSIFY DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU
    EMBEDDING_LOOKUP EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GELU GREATER
    GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGISTIC LSTM
    MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT PACK PAD PADV2 POW
    PRELU QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RELU_N1_TO_1 RESHAPE
    RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SELECT SELECT_V2 SIGN SIN SLICE SOFTMAX
    SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE STABLEHLO_CLAMP STRIDED_SLICE
    SUB SUM TANH TILE TRANSPOSE TRANSPOSE_CONV
    """.split()
)
# Ops on GPU_OPS that LiteRT's GPU accelerator fails on when the file is RUN, in every form we
# built (`python benchmarks/gpu_op_table.py`, ai-edge-litert 2.3.0, Mesa 25 lavapipe; see
# docs/deployment.md). The run is the authority: `check(blob, "gpu")` refuses these. Ops that
# fail only in some forms (ADD_N with 3 inputs, ONE_HOT over a last dimension > 1) stay on the
# table; `run_on_gpu` catches them.
GPU_OPS_FAILING_AT_RUN = {
    "CUMSUM": "LiteRT's GPU accelerator kills the process (SIGILL) over the last axis of a [1, 4, 4, 4] "
    "tensor and returns wrong values over a [1, 64] one; compute a cumulative sum as a matmul with a "
    "triangular matrix of ones instead",
}
# Custom ops the GPU delegate implements (same file, CheckCustomOpsGpuDelegateCompatibility).
GPU_CUSTOM_OPS = frozenset(
    {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"}
)

# Ops the Edge TPU compiler maps to the Edge TPU: the "Supported operations" table of
# https://coral.ai/docs/edgetpu/models-intro/#supported-operations (TFLite builtin
# names). Each entry there also carries limits (e.g. FullyConnected output 1-D, Mean
# over x/y only, tensors of at most 3 non-1 innermost dims) that only edgetpu_compiler
# checks; edgetpu_compiler is not installable here. The compiler maps ops up to the
# first unsupported one and leaves everything after it on the CPU. Ops we could not
# confirm on that page (e.g. HARD_SWISH, DEQUANTIZE) are left out: a false "stays on
# the CPU" is cheaper than a false "runs on the Edge TPU".
EDGETPU_OPS = frozenset(
    """
    ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D EXPAND_DIMS
    FULLY_CONNECTED L2_NORMALIZATION LOGISTIC LSTM MAXIMUM MAX_POOL_2D MEAN
    MINIMUM MUL PACK PAD PRELU QUANTIZE REDUCE_MAX REDUCE_MIN RELU RELU6 RELU_N1_TO_1
    RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SLICE SOFTMAX SPACE_TO_DEPTH
    SPLIT SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM TANH TRANSPOSE TRANSPOSE_CONV
    """.split()
)

# Builtin ops TFLite Micro implements: the `Add*` methods of `MicroMutableOpResolver` in
# tensorflow/lite/micro/micro_mutable_op_resolver.h (tensorflow/tflite-micro, read at
# commit 03c312b). Newer TFLM releases add ops; an op missing here may exist in a newer
# TFLM, so the error message says which list was used.
MICRO_OPS = frozenset(
    """
    ABS ADD ADD_N ARG_MAX ARG_MIN AVERAGE_POOL_2D BATCH_TO_SPACE_ND CAST CEIL CONCATENATION
    CONV_2D COS CUMSUM DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE ELU EQUAL EXP EXPAND_DIMS
    FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL
    HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND
    LOGICAL_NOT LOGICAL_OR LOGISTIC MAXIMUM MAX_POOL_2D MEAN MINIMUM MUL NEG NOT_EQUAL PACK
    PAD PADV2 PRELU QUANTIZE REDUCE_MAX RELU RELU6 RESHAPE RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR ROUND RSQRT SHAPE SIN SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH
    SPLIT SPLIT_V SQRT SQUARE SQUEEZE STRIDED_SLICE SUB SVDF TANH TRANSPOSE TRANSPOSE_CONV
    UNPACK ZEROS_LIKE
    """.split()
)
MICRO_OPS_SOURCE = "tflite-micro micro_mutable_op_resolver.h @ 03c312b"

# Ops that compute shapes at run time: their presence means a dynamic shape somewhere
# (a Flatten traced with batch None becomes SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE).
DYNAMIC_SHAPE_OPS = frozenset({"SHAPE", "RANK"})
