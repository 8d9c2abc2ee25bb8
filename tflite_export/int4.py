"""4-bit weights on LiteRT: a float32 file made into an `int4` or `int4-weights` file by ai-edge-quantizer.

Google's ai-edge-quantizer (AEQ) rewrites a float `.tflite` file from a recipe: which
ops get which weight and activation bits, chosen per op by a regex on the op's output
tensor names. We never write 4-bit tensors ourselves; this module only chooses the
recipe and the activation ranges:

- `int4`: 4-bit symmetric weights per output channel on FULLY_CONNECTED and CONV_2D
  (the ops AEQ and LiteRT run with int4 weights and int8 activations), int8 weights on
  the other weighted ops, int8 activations everywhere AEQ has an integer kernel.
  Ops without one stay float between DEQUANTIZE and QUANTIZE.
- `int4-weights`: 4-bit weights dequantized to float before each op; activations float.

A weight that already lies on a symmetric grid keeps it: a kernel whose values are
`k * max|w| / 7` per channel (a 4-bit QAT kernel) is stored in 4 bits, one on the
8-bit grid (an 8-bit QAT kernel: per tensor for Dense, per channel for convolutions)
in 8 bits with that grid, so a QAT model's file holds exactly its fake-quantized
weights, whatever mix of 4 and 8 bits it trained. A float weight gets the target's
bits. `activation_ranges` (tensor name -> (min, max)) replaces the calibrated range
of a tensor, which is how a QAT model's learned ranges reach the file.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Sequence

import numpy as np

from tflite_export._dead_ranges import dead_range
from tflite_export.errors import ExportError

logger = logging.getLogger(__name__)

# AEQ's default policy (ai_edge_quantizer/default_policy.py, 0.10.0): "static_wi4_ai8" and
# "weightonly_wi4_afp32" list these among the ops with weights.
INT4_OPS = ("FULLY_CONNECTED", "CONV_2D")
# Ops whose input 1 is a kernel: the output-channel axis of that kernel in TFLite's layout.
_KERNEL_AXIS = {"FULLY_CONNECTED": 0, "CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "TRANSPOSE_CONV": 0}
_AEQ_OP_NAMES = {"TRANSPOSE_CONV": "CONV_2D_TRANSPOSE"}  # where AEQ's name differs from the schema's
_GRID_TOLERANCE = 1e-3  # of one quantization step: float32 rounding of k * scale stays far below it


def on_grid(weight: np.ndarray, bits: int, axis: int | None) -> bool:
    """Whether every value of `weight` is `k * max|w| / (2**(bits-1) - 1)` (per slice along `axis`, or per tensor)."""
    weight = np.asarray(weight, dtype=np.float64)
    qmax = 2 ** (bits - 1) - 1
    reduce = None if axis is None else tuple(i for i in range(weight.ndim) if i != axis)
    bound = np.max(np.abs(weight), axis=reduce, keepdims=True)
    scale = np.where(bound > 0, bound / qmax, 1.0)
    steps = weight / scale
    return bool(np.all(np.abs(steps - np.round(steps)) <= _GRID_TOLERANCE))


def weight_bits(weight: np.ndarray, op: str, *, default: int) -> tuple[int, bool]:
    """`(bits, per_channel)` for a kernel: the grid it already lies on, else `default` bits per channel.

    4 bits are offered only to `INT4_OPS`; a grid is tested from the finest claim up
    (4 bits per channel, then 8 per tensor, then 8 per channel), so a kernel is stored
    without changing a value whenever it can be.
    """
    axis = _KERNEL_AXIS.get(op, 0)
    if op in INT4_OPS and on_grid(weight, 4, axis):
        return 4, True
    if on_grid(weight, 8, None):
        return 8, False
    if on_grid(weight, 8, axis):
        return 8, True
    return (default if op in INT4_OPS else 8), True


def _model(blob: bytes):
    from ai_edge_litert import schema_py_generated as schema

    return schema, schema.ModelT.InitFromPackedBuf(blob, 0)


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def _constant(fb, tensor) -> np.ndarray | None:
    """A float32 constant tensor's values, or None (an activation, or another dtype)."""
    buffers = fb.buffers or []
    data = buffers[tensor.buffer].data if 0 < tensor.buffer < len(buffers) else None
    if data is None or len(data) == 0 or tensor.type != 0:  # TensorType.FLOAT32 == 0
        return None
    return np.asarray(data, dtype=np.uint8).view(np.float32).reshape(tuple(tensor.shape))


def weighted_ops(blob: bytes) -> list[tuple[str, str, np.ndarray]]:
    """`(op name, AEQ scope, kernel)` of each op of subgraph 0 whose input 1 is a float constant of rank >= 2.

    The scope is how AEQ names an op for a recipe regex: its output tensor names, each
    followed by ';'.
    """
    schema, fb = _model(blob)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = fb.subgraphs[0]
    found = []
    for op in graph.operators or []:
        code = fb.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        inputs = list(op.inputs if op.inputs is not None else [])
        if name not in _KERNEL_AXIS or len(inputs) < 2 or inputs[1] < 0:
            continue
        kernel = _constant(fb, graph.tensors[inputs[1]])
        if kernel is None or kernel.ndim < 2:
            continue
        scope = "".join(f"{_name(graph.tensors[i])};" for i in op.outputs if i >= 0)
        found.append((name, scope, kernel))
    return found


def activation_values(blob: bytes, samples: Sequence[Sequence[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Each non-constant float32 tensor of subgraph 0, by name: its value on every sample.

    Runs the file on LiteRT's reference kernels with every tensor kept (a delegate
    would fuse intermediate tensors away). `samples` holds one list of input arrays
    per sample, in the file's input order.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    _, fb = _model(blob)
    graph = fb.subgraphs[0]
    constant = {_name(t) for t in graph.tensors if _constant(fb, t) is not None}
    with warnings.catch_warnings():  # "intended for debugging purposes only": keeping every tensor is the point here
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(
            model_content=blob,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        )
    interpreter.allocate_tensors()
    inputs = [d["index"] for d in interpreter.get_input_details()]
    details = [
        d for d in interpreter.get_tensor_details()
        if d["name"] and d["name"] not in constant and np.dtype(d["dtype"]) == np.float32 and np.all(d["shape"])
    ]
    values: dict[str, list[np.ndarray]] = {d["name"]: [] for d in details}
    for sample in samples:
        for index, array in zip(inputs, sample):
            interpreter.set_tensor(index, np.asarray(array, dtype=np.float32))
        interpreter.invoke()
        for d in details:
            values[d["name"]].append(np.array(interpreter.get_tensor(d["index"])))
    return values


def _ranges(blob: bytes, samples, activation_ranges: dict[str, tuple[float, float]] | None) -> dict:
    """AEQ's calibration result: `{tensor: {"min", "max"}}`, min/max over `samples`, `activation_ranges` first."""
    given = dict(activation_ranges or {})
    result = {}
    for name, arrays in activation_values(blob, samples).items():
        ndim = arrays[0].ndim
        if name in given:
            low, high = (float(v) for v in given[name])
        else:
            low = float(min(a.min() for a in arrays))
            high = float(max(a.max() for a in arrays))
            # A dead tensor's [0, 0] would get a scale XNNPACK refuses: widened as `convert` does (`_dead_ranges`).
            low, high = dead_range(low, high) or (low, high)
        result[name] = {
            "min": np.full((1,) * ndim, low, np.float32),
            "max": np.full((1,) * ndim, high, np.float32),
        }
    unknown = sorted(set(given) - set(result))
    if unknown:
        raise ExportError(f"activation_ranges names tensors the float file does not have: {unknown[:5]}")
    return result


def _recipe(quantizer, blob: bytes, target: str) -> dict[str, int]:
    """Adds the per-op configs to `quantizer`; returns how many kernels got each bit width."""
    from ai_edge_quantizer import qtyping

    ops = qtyping.TFLOperationName
    granularity = qtyping.QuantGranularity
    counts = {"int4": 0, "int8": 0}
    if target == "int4-weights":
        quantizer.add_weight_only_config(".*", ops.ALL_SUPPORTED, 4)
        counts["int4"] = sum(name in INT4_OPS for name, _, _ in weighted_ops(blob))
        return counts
    quantizer.add_static_config(".*", ops.ALL_SUPPORTED, 8, 8)
    for name, scope, kernel in weighted_ops(blob):
        bits, per_channel = weight_bits(kernel, name, default=4)
        counts[f"int{bits}"] += 1
        quantizer.add_static_config(
            f"^{re.escape(scope)}$", ops(_AEQ_OP_NAMES.get(name, name)), 8, bits,
            weight_granularity=granularity.CHANNELWISE if per_channel else granularity.TENSORWISE,
        )
    return counts


# ai-edge-quantizer's scale for an all-zero channel: its bound floor (1e-9) over the int4/int8 qmax.
_FLOOR_SCALE = 1e-9 / 7


def _float_constants(blob: bytes) -> dict[str, np.ndarray]:
    _, fb = _model(blob)
    graph = fb.subgraphs[0]
    found = {}
    for tensor in graph.tensors:
        value = _constant(fb, tensor) if tensor.shape is not None and len(tensor.shape) else None
        if value is not None:
            found[_name(tensor)] = value
    return found


def dead_channel_scales(blob: bytes, float_blob: bytes) -> bytes:
    """`blob` (AEQ's int4 file) with each all-zero kernel channel at scale 1.0 and its bias requantized.

    AEQ gives a kernel channel whose weights are all zero (a pruned unit) the scale
    `1e-9 / 7`, and its int32 bias the scale `input scale x 1.4e-10`: the bias then
    overflows int32 (numpy's "invalid value encountered in cast") and the file adds
    garbage to that unit. Any scale stores the zeros exactly; with 1.0 the bias is
    requantized from the float file's value. A file without such a channel is returned unchanged.
    """
    import flatbuffers

    from tflite_export.weights import unpack_int4

    schema, fb = _model(blob)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = fb.subgraphs[0]
    biases = None
    changed = []
    for op in graph.operators or []:
        code = fb.operatorCodes[op.opcodeIndex]
        inputs = list(op.inputs if op.inputs is not None else [])
        if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) not in _KERNEL_AXIS or len(inputs) < 3:
            continue
        kernel, bias = graph.tensors[inputs[1]], graph.tensors[inputs[2]] if inputs[2] >= 0 else None
        q = kernel.quantization
        if q is None or q.scale is None or kernel.type not in (schema.TensorType.INT4, schema.TensorType.INT8):
            continue
        scales = np.array(q.scale, dtype=np.float32)
        if len(scales) < 2 or not np.any(scales <= _FLOOR_SCALE * 1.001):
            continue
        raw = np.asarray(fb.buffers[kernel.buffer].data, dtype=np.uint8)
        count = int(np.prod(kernel.shape))
        values = unpack_int4(raw, count) if kernel.type == schema.TensorType.INT4 else raw.view(np.int8)[:count]
        by_channel = np.moveaxis(values.reshape(tuple(kernel.shape)), q.quantizedDimension, 0).reshape(len(scales), -1)
        dead = (scales <= _FLOOR_SCALE * 1.001) & ~np.any(by_channel != 0, axis=1)
        if not np.any(dead):
            continue
        scales[dead] = 1.0
        q.scale = scales.tolist()
        changed.append(_name(kernel))
        if bias is None or bias.type != schema.TensorType.INT32 or bias.quantization is None:
            continue
        biases = _float_constants(float_blob) if biases is None else biases
        float_bias = biases.get(_name(bias))
        input_scale = graph.tensors[inputs[0]].quantization.scale
        if float_bias is None or input_scale is None or len(input_scale) != 1:
            raise ExportError(f"The float bias of {_name(kernel)!r} (all-zero channels) was not found in the float file")
        bias_scales = np.array(bias.quantization.scale, dtype=np.float32)
        bias_scales[dead] = np.float32(input_scale[0])
        stored = np.asarray(fb.buffers[bias.buffer].data, dtype=np.uint8).view(np.int32).copy()
        stored[dead] = np.clip(np.round(float_bias.reshape(-1)[dead] / bias_scales[dead]), -(2**31), 2**31 - 1)
        bias.quantization.scale = bias_scales.tolist()
        fb.buffers[bias.buffer].data = stored.view(np.uint8)
    if not changed:
        return blob
    logger.info("int4 file: all-zero kernel channels given scale 1.0 in %s", changed)
    builder = flatbuffers.Builder(len(blob) + 1024)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def quantize_float_file(
    blob: bytes,
    target: str,
    samples: Sequence[Sequence[np.ndarray]] | None = None,
    *,
    activation_ranges: dict[str, tuple[float, float]] | None = None,
) -> bytes:
    """A float32 TFLite file quantized by ai-edge-quantizer for `target` ("int4" or "int4-weights").

    Args:
        blob: a float32 `.tflite` file (`convert(model, "float32")`).
        target: "int4" (int8 activations, needs `samples`) or "int4-weights".
        samples: calibration inputs, one list of arrays per sample (the file's input order).
        activation_ranges: `{tensor name: (min, max)}` of the float file's activations, used
            instead of their calibrated min/max (a QAT model's learned ranges).

    Returns:
        The quantized `.tflite` bytes.

    Raises:
        ExportError: an unknown target, missing samples, or a range for a tensor the file lacks.
    """
    if target not in ("int4", "int4-weights"):
        raise ExportError(f"Expected `target` to be 'int4' or 'int4-weights'. Received: target={target!r}")
    if target == "int4" and not samples:
        raise ExportError("target='int4' quantizes activations and needs calibration samples")
    from ai_edge_quantizer import quantizer as aeq

    quantizer = aeq.Quantizer(bytearray(blob))
    counts = _recipe(quantizer, blob, target)
    calibration = _ranges(blob, samples, activation_ranges) if target == "int4" else None
    with warnings.catch_warnings():  # AEQ checks the calibration on an interpreter keeping every tensor
        warnings.simplefilter("ignore", UserWarning)
        # An all-zero channel's bias overflows in AEQ's cast; dead_channel_scales sets it right.
        warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        result = quantizer.quantize(calibration, enable_progress_report=False)
    logger.info("ai-edge-quantizer %s: %s", target, counts)
    quantized = bytes(result.quantized_model)
    return dead_channel_scales(quantized, blob) if target == "int4" else quantized
