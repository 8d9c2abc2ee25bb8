"""Read a TFLite file's structure: ops, tensor dtypes, weights, signature, GPU verdict.

The structure comes from the flatbuffer itself, read with the schema classes that
ship with `ai_edge_litert` (`schema_py_generated`), so it is exact and needs no
interpreter. The GPU verdict combines our op table (`targets.GPU_OPS`), the
absence of dynamic shapes, and TensorFlow's analyzer text when TensorFlow is
installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
from collections import Counter
from typing import Any

import numpy as np

from tflite_export import runtime
from tflite_export import targets as targets_lib
from tflite_export.weights import unpack_int4

_NUMPY_DTYPES = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64, "int8": np.int8,
    "uint8": np.uint8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
}
_WEIGHT_DTYPES = ("float32", "float16", "int8", "uint8", "int4")


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclasses.dataclass
class TensorInfo:
    """An input or output of the model: what a caller must feed or will get."""

    name: str
    shape: list[int]
    dtype: str
    scale: list[float]
    zero_point: list[int]

    @property
    def quantized(self) -> bool:
        return bool(self.scale)


@dataclasses.dataclass
class Analysis:
    """What a TFLite file contains. Build it with `analyze(blob)`.

    Attributes:
        size_bytes / gzip_bytes: file size, raw and gzipped (pruning only shrinks the latter);
            `gzip_bytes` is None when `analyze(..., gzip_size=False)` skipped it.
        ops: op names in execution order (subgraph 0); `op_counts`: histogram.
        custom_ops: custom op names (Flex ops are custom ops named `Flex...`).
        dtype_counts: number of tensors per dtype (all subgraphs).
        tensors_not_int8_int32: `(name, dtype)` of tensors that are neither int8 nor
            int32; empty for a full-integer int8 file with int8 I/O.
        constant_bytes: bytes held by constant tensors.
        weight_count / zero_weight_fraction: elements of rank>=2 constant float or
            8-bit tensors (kernels; biases and shape constants excluded) and the
            fraction equal to their zero point.
        sparse_tensors: tensors stored in the sparse format.
        inputs / outputs: the signature (shape as stored, -1 for a dynamic dim).
        dynamic_tensors: tensors with a -1 in their shape signature.
        has_dynamic_shape_ops: SHAPE/RANK ops or dynamic tensors are present.
        gpu_compatible / gpu_problems: our verdict for LiteRT's GPU accelerator.
        gpu_analyzer_text: TensorFlow's analyzer output, captured (empty without TF).
        weight_dtypes: weight tensors (rank >= 2 constants) per dtype, `{"int4": 3, "float32": 1}`.
        weight_bytes: bytes those weight tensors take per dtype (an int4 tensor: two values a byte).
        float_ops: `(op, output tensor name)` of each op (subgraph 0) that computes in float: its
            output is float32 or float16 (DEQUANTIZE excluded). Empty for a full-integer file; in an
            int8 file made with `float_layers=`, the ops of those layers.
    """

    size_bytes: int
    gzip_bytes: int | None
    ops: list[str]
    op_counts: dict[str, int]
    custom_ops: list[str]
    dtype_counts: dict[str, int]
    tensors_not_int8_int32: list[tuple[str, str]]
    constant_bytes: int
    weight_count: int
    zero_weight_fraction: float
    sparse_tensors: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    dynamic_tensors: list[str]
    has_dynamic_shape_ops: bool
    gpu_compatible: bool
    gpu_problems: list[str]
    gpu_analyzer_text: str = dataclasses.field(repr=False, default="")
    weight_dtypes: dict[str, int] = dataclasses.field(default_factory=dict)
    weight_bytes: dict[str, int] = dataclasses.field(default_factory=dict)
    float_ops: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def uses_flex(self) -> bool:
        return any(op.startswith("Flex") for op in self.custom_ops)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tensors_not_int8_int32"] = [list(t) for t in self.tensors_not_int8_int32]
        d["float_ops"] = [list(t) for t in self.float_ops]
        d["uses_flex"] = self.uses_flex
        return d

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def to_text(self) -> str:
        def sig(t: TensorInfo) -> str:
            q = f" scale={t.scale[0]:.6g} zero_point={t.zero_point[0]}" if len(t.scale) == 1 else ""
            q = q or (f" per-channel ({len(t.scale)} scales)" if t.scale else "")
            return f"  {t.name}: {t.dtype}{t.shape}{q}"

        lines = [
            f"size: {self.size_bytes} bytes"
            + ("" if self.gzip_bytes is None else f" ({self.gzip_bytes} gzipped)")
            + f", constants {self.constant_bytes} bytes",
            f"ops ({len(self.ops)}): " + ", ".join(f"{k} x{v}" for k, v in self.op_counts.items()),
            "tensor dtypes: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.dtype_counts.items())),
            f"weights: {self.weight_count} elements, {self.zero_weight_fraction:.1%} zeros, "
            f"{self.sparse_tensors} sparse tensors",
            "weight tensors: " + (", ".join(
                f"{dtype} x{count} ({self.weight_bytes.get(dtype, 0)} bytes)"
                for dtype, count in sorted(self.weight_dtypes.items())) or "none"),
            *([f"float ops ({len(self.float_ops)}): " + ", ".join(f"{op} {name}" for op, name in self.float_ops[:5])
               + (", ..." if len(self.float_ops) > 5 else "")]
              if self.float_ops and self.dtype_counts.get("int8") else []),  # float ops beside int8 ones
            "inputs:", *map(sig, self.inputs), "outputs:", *map(sig, self.outputs),
            f"dynamic shapes: {'yes' if self.has_dynamic_shape_ops else 'no'}"
            + (f" ({', '.join(self.dynamic_tensors[:5])})" if self.dynamic_tensors else ""),
            f"Flex (SELECT_TF_OPS): {'yes' if self.uses_flex else 'no'}",
            "GPU: " + ("compatible" if self.gpu_compatible else "NOT compatible: " + "; ".join(self.gpu_problems)),
        ]
        return "\n".join(lines)


def _tensor_info(tensor, type_names) -> TensorInfo:
    q = tensor.quantization
    scale = [float(s) for s in (q.scale if q is not None and q.scale is not None else [])]
    zp = [int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])]
    shape_sig = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    return TensorInfo(
        name=tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name),
        shape=[int(d) for d in (shape_sig if shape_sig is not None else [])],
        dtype=type_names[tensor.type].lower(),
        scale=scale,
        zero_point=zp,
    )


def _gpu_analyzer_text(blob: bytes) -> str:
    """TensorFlow's analyzer report with `gpu_compatibility=True` (it only prints)."""
    try:
        import tensorflow as tf
    except ImportError:
        return ""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tf.lite.experimental.Analyzer.analyze(model_content=blob, gpu_compatibility=True)
    return buffer.getvalue()


def analyze(model: bytes | str | os.PathLike, *, gpu_analyzer: bool = True, gzip_size: bool = True) -> Analysis:
    """Reads a TFLite file and reports what it contains.

    Args:
        model: TFLite bytes or a path to a `.tflite` file.
        gpu_analyzer: also run TensorFlow's analyzer for its GPU text (skipped
            silently when TensorFlow is not installed).
        gzip_size: compute `gzip_bytes`. Level-9 gzip takes seconds on a file of a few
            MB (about 9 s for DenseNet121's 7 MB int8 file on a busy core), so `convert`,
            which only checks the ops, skips it.

    Returns:
        An `Analysis`.

    Raises:
        ExportError: `model` is not a TFLite file.

    Example:

    >>> a = analyze("model.tflite")   # doctest: +SKIP
    >>> a.op_counts, a.inputs[0].dtype  # doctest: +SKIP
    """
    from ai_edge_litert import schema_py_generated as schema

    blob = runtime.read_model(model)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    fb = schema.ModelT.InitFromPackedBuf(blob, 0)
    code_names = _operator_code_names(fb, op_names, schema)
    main = fb.subgraphs[0]
    ops = [code_names[op.opcodeIndex] for op in main.operators or []]
    tensors = _tensor_stats(fb, type_names)
    has_dynamic = bool(tensors.dynamic_tensors) or any(op in targets_lib.DYNAMIC_SHAPE_OPS for op in ops)
    analyzer_text = _gpu_analyzer_text(blob) if gpu_analyzer else ""
    gpu_problems = _gpu_problems(ops, tensors.dynamic_tensors, has_dynamic, analyzer_text)
    return Analysis(
        size_bytes=len(blob),
        gzip_bytes=len(gzip.compress(blob, compresslevel=9, mtime=0)) if gzip_size else None,
        ops=ops,
        op_counts=dict(Counter(ops)),
        custom_ops=sorted({name for name in code_names if name not in op_names.values()}),
        dtype_counts=dict(tensors.dtype_counts),
        tensors_not_int8_int32=tensors.not_int8_int32,
        constant_bytes=tensors.constant_bytes,
        weight_count=tensors.weight_count,
        zero_weight_fraction=tensors.zero_count / tensors.weight_count if tensors.weight_count else 0.0,
        sparse_tensors=tensors.sparse_tensors,
        inputs=[_tensor_info(main.tensors[i], type_names) for i in main.inputs],
        outputs=[_tensor_info(main.tensors[i], type_names) for i in main.outputs],
        dynamic_tensors=tensors.dynamic_tensors,
        has_dynamic_shape_ops=has_dynamic,
        gpu_compatible=not gpu_problems,
        gpu_problems=gpu_problems,
        gpu_analyzer_text=analyzer_text,
        weight_dtypes=dict(tensors.weight_dtypes),
        weight_bytes=dict(tensors.weight_bytes),
        float_ops=_float_ops(main, ops, type_names),
    )


def _float_ops(subgraph, ops: list[str], type_names: dict[int, str]) -> list[tuple[str, str]]:
    """`(op, output name)` of the ops whose first output is float, DEQUANTIZE (a boundary, not compute) left out."""
    found = []
    for op, operator in zip(ops, subgraph.operators or []):
        outputs = [] if operator.outputs is None else list(operator.outputs)
        if op == "DEQUANTIZE" or not outputs or outputs[0] < 0:
            continue
        tensor = subgraph.tensors[outputs[0]]
        if type_names[tensor.type].lower() in ("float32", "float16"):
            found.append((op, _tensor_info(tensor, type_names).name))
    return found


def _operator_code_names(fb, op_names: dict[int, str], schema) -> list[str]:
    """The name of each operator code: the builtin's name, or a custom op's own."""
    names = []
    for code in fb.operatorCodes or []:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode
            names.append(custom.decode() if isinstance(custom, bytes) else str(custom))
        else:
            names.append(op_names.get(builtin, f"BUILTIN_{builtin}"))
    return names


@dataclasses.dataclass
class _TensorStats:
    dtype_counts: Counter = dataclasses.field(default_factory=Counter)
    not_int8_int32: list = dataclasses.field(default_factory=list)
    dynamic_tensors: list = dataclasses.field(default_factory=list)
    constant_bytes: int = 0
    weight_count: int = 0
    zero_count: int = 0
    sparse_tensors: int = 0
    weight_dtypes: Counter = dataclasses.field(default_factory=Counter)
    weight_bytes: Counter = dataclasses.field(default_factory=Counter)


def _tensor_stats(fb, type_names: dict[int, str]) -> _TensorStats:
    """Dtypes, constant bytes and the zeros of the weight tensors (2-D and up) over every subgraph.

    A quantized weight's zero is its zero point; a sparse tensor stores only its non-zeros.
    """
    buffers = fb.buffers or []
    stats = _TensorStats()
    for subgraph_index, subgraph in enumerate(fb.subgraphs):
        for tensor in subgraph.tensors or []:
            info = _tensor_info(tensor, type_names)
            stats.dtype_counts[info.dtype] += 1
            if info.dtype not in ("int8", "int32"):
                stats.not_int8_int32.append((info.name, info.dtype))
            if subgraph_index == 0 and any(d < 0 for d in info.shape):
                stats.dynamic_tensors.append(info.name)
            data = buffers[tensor.buffer].data if 0 < tensor.buffer < len(buffers) else None
            if data is None or len(data) == 0:
                continue
            raw = np.asarray(data, dtype=np.uint8)
            stats.constant_bytes += raw.nbytes
            shape = tensor.shape if tensor.shape is not None else []
            if info.dtype not in _WEIGHT_DTYPES or len(shape) < 2:
                continue
            dense = int(np.prod(shape))
            values = unpack_int4(raw, dense) if info.dtype == "int4" else raw.view(_NUMPY_DTYPES[info.dtype])
            zero = info.zero_point[0] if info.zero_point and info.dtype in ("int8", "uint8", "int4") else 0
            stats.weight_dtypes[info.dtype] += 1
            stats.weight_bytes[info.dtype] += raw.nbytes
            stats.weight_count += dense
            if tensor.sparsity is not None:
                stats.sparse_tensors += 1
                stats.zero_count += dense - int(np.count_nonzero(values != zero))
            else:
                stats.zero_count += int(np.count_nonzero(values == zero))
    return stats


def _gpu_problems(ops: list[str], dynamic_tensors: list[str], has_dynamic: bool, analyzer_text: str) -> list[str]:
    """What keeps the file off the GPU delegate: dynamic shapes, ops outside its table, the analyzer's warnings."""
    problems = []
    if has_dynamic:
        problems.append("dynamic shapes (" + ", ".join(
            sorted({op for op in ops if op in targets_lib.DYNAMIC_SHAPE_OPS}) or dynamic_tensors[:3]) + ")")
    for index, op in enumerate(ops):
        if op not in targets_lib.GPU_OPS and op not in targets_lib.GPU_CUSTOM_OPS:
            problems.append(f"op #{index} {op} is not supported by the GPU delegate")
    # The analyzer marks failing ops with this phrase; keep its own words.
    problems += [line.strip() for line in analyzer_text.splitlines() if "GPU COMPATIBILITY WARNING" in line]
    return problems
