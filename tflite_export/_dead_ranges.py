"""Dead activations (all zero on the calibration data) given a range the runtimes accept.

Why: when every unit of a ReLU layer is dead, its output tensor calibrates to [0, 0]. TF's
quantizers do not handle that range well. The MLIR quantizer (int8) widens any range narrower
than 1e-6 to [-1e-6, 1e-6] (its `kNearZeroTolerance`), which gives a scale of 7.8e-9. The op
that writes the tensor then has a requantization scale (input scale x weight scale / output
scale) far above the 256 LiteRT's XNNPACK delegate accepts, so LiteRT refuses the whole file
("Node number N (TfLiteXNNPackDelegate) failed to prepare"). The next layer's bias, stored at
input scale x weight scale, also no longer fits int32, so the quantizer coarsens that layer's
weight scales (15x in a small test). The legacy quantizer (int16x8, unrolled recurrent layers)
gives a denormal scale (3.6e-43) and infinite weight scales, and computes wrong outputs without
any error.

Fix: the calibrated float file's range of such a tensor (all zero, not merely small) is widened to `DEAD_RANGE` before it
is quantized ([0, 1] for a tensor that is never negative, a ReLU's). Values that are all 0 are
stored exactly under any range holding 0 (the quantizers put 0 on an integer), so the file
computes the same thing on the calibration data, and the ops around the tensor get ordinary
scales: the writing op's requantization scale is its input scale x weight scale x 255, the next
layer's bias and weights are quantized as usual. `convert` quantizes again only a file that
`has_dead_activations`; the `int4` target (ai-edge-quantizer) widens its calibrated ranges with
`dead_range` too. A width of 1 rather than the 1e-3
of kstruct's QAT quantizers: the writing op needs input scale x weight scale below about the
width (XNNPACK's limit), and raw 0-255 pixel inputs (input scale 1) would break 1e-3.
"""

from __future__ import annotations

import numpy as np

_FILE_IDENTIFIER = b"TFL3"
NEAR_ZERO = 1e-6  # TF's quantizers treat a range narrower than this as degenerate
DEAD_RANGE = 1.0  # the width a dead tensor's range is given
ALL_ZERO_WIDTH = 2 * float(np.finfo(np.float32).tiny)  # the widest calibrated range that means "all zero"
# A quantized tensor whose scale spans at most this over its integer range came from a degenerate
# range: the MLIR quantizer's [-1e-6, 1e-6] (int8 scale 7.8e-9) or the legacy quantizer's smaller ones.
_DEAD_SPAN = 2.0 * NEAR_ZERO * 1.01


def dead_range(low: float, high: float) -> tuple[float, float] | None:
    """The range that replaces a degenerate calibrated `[low, high]`, or None if it is not degenerate."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    # Only a tensor whose values are all 0 (the calibrator records them as [0, 1.2e-38], float32's
    # smallest normal number). A tiny range that is not zero (an untrained deep model's activations
    # fade to 1e-7) holds values: widening it to DEAD_RANGE would round them all to 0 and give the
    # ops after it scales XNNPACK refuses (tests/tflite_export/test_mobilenet.py).
    if not (np.isfinite(low) and np.isfinite(high)) or high - low > ALL_ZERO_WIDTH:
        return None
    if low == 0.0:  # never negative: a dead ReLU
        return 0.0, DEAD_RANGE
    if high == 0.0:
        return -DEAD_RANGE, 0.0
    return -DEAD_RANGE / 2, DEAD_RANGE / 2


def _pack(model, size_hint: int) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def widen_dead_ranges(calibrated: bytes) -> bytes:
    """`calibrated` (a float file with calibration min/max) with every all-zero range (`dead_range`)
    widened to `DEAD_RANGE`; a file without one is returned unchanged, byte for byte."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(calibrated, 0)
    changed = False
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            quantization = tensor.quantization
            if tensor.type != schema.TensorType.FLOAT32 or quantization is None:
                continue
            if quantization.min is None or quantization.max is None or len(quantization.min) != 1:
                continue
            if len(quantization.max) != 1:
                continue
            widened = dead_range(quantization.min[0], quantization.max[0])
            if widened is not None:
                quantization.min, quantization.max = [widened[0]], [widened[1]]
                changed = True
    return _pack(model, len(calibrated)) if changed else calibrated


def has_dead_activations(blob: bytes) -> bool:
    """Whether the quantized file holds an activation (a tensor without data) whose int8/uint8/int16
    scale came from a degenerate calibrated range (see the module docstring)."""
    from ai_edge_litert import schema_py_generated as schema

    levels = {schema.TensorType.INT8: 255, schema.TensorType.UINT8: 255, schema.TensorType.INT16: 65535}
    model = schema.ModelT.InitFromPackedBuf(blob, 0)
    buffers = model.buffers or []
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            quantization = tensor.quantization
            if tensor.type not in levels or quantization is None or quantization.scale is None:
                continue
            if len(quantization.scale) != 1:  # per-channel: weights
                continue
            buffer = buffers[tensor.buffer] if 0 < tensor.buffer < len(buffers) else None
            if buffer is not None and buffer.data is not None and len(buffer.data) > 0:
                continue  # a constant
            if float(quantization.scale[0]) * levels[tensor.type] <= _DEAD_SPAN:
                return True
    return False
