"""Some layers left in float inside an int8 file: `convert(model, "int8", ..., float_layers=[...])`.

Why this way: the converter's own int8 flow quantizes every op it can. Its MLIR quantizer
takes a list of nodes to leave alone (`denylisted_nodes`, what
`tf.lite.experimental.QuantizationDebugOptions` passes it), but only when it is called on a
calibrated float file: so the converter is asked to calibrate only
(`_experimental_calibrate_only`, as `QuantizationDebugger` does) and the calibrated file is
quantized here, with the named layers' ops on the deny list. Each such op keeps float
weights and runs in float between a DEQUANTIZE and a QUANTIZE; everything else is the int8
file the target would give.

A node is named by the op's output tensor, which the converter names after the TensorFlow
ops fused into it (`model_1/dense_2/MatMul;model_1/dense_2/Relu`). TensorFlow makes each
layer's name scope unique (`dense` may become `dense_1`, and `dense_1` become `dense_1_2`),
so a layer's scope is read from the traced graph itself: the scope of the ops that read the
layer's own variables.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from tflite_export.errors import ExportError


def _all_layers(model) -> list[Any]:
    """Every layer of `model`, nested models' layers included, each once."""
    found, stack, seen = [], list(getattr(model, "layers", [])), set()
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


def _scope_of(op_name: str, layer_name: str) -> str | None:
    """The layer's scope in an op name: the innermost component that is the layer's name, made unique or not."""
    parts = op_name.split("/")[:-1]
    pattern = re.compile(re.escape(layer_name) + r"(_\d+)?")
    for index in range(len(parts) - 1, -1, -1):
        if pattern.fullmatch(parts[index]):
            return "/".join(parts[: index + 1])
    return None


def layer_scopes(keras_model, concrete, names: Sequence[str]) -> list[str]:
    """The TensorFlow name scopes of the named layers in `concrete` (the traced model).

    Raises:
        ExportError: a name that is no layer of the model, or a layer without weights.
    """
    layers = _all_layers(keras_model)
    by_name: dict[str, list[Any]] = {}
    for layer in layers:
        by_name.setdefault(layer.name, []).append(layer)
    missing = [name for name in names if name not in by_name]
    if missing:
        weighted = sorted({layer.name for layer in layers if layer.weights and not getattr(layer, "layers", None)})
        raise ExportError(
            f"Expected `float_layers` to name layers of the model. Received: {missing} (no such layer); "
            f"layers with weights: {weighted}"
        )
    internal = {id(external): placeholder for external, placeholder in concrete.graph.captures}
    scopes: list[str] = []
    for name in names:
        found = []
        for layer in by_name[name]:
            for variable in layer.weights:
                handle = getattr(getattr(variable, "value", variable), "handle", None)
                placeholder = internal.get(id(handle))
                for consumer in [] if placeholder is None else placeholder.consumers():
                    scope = _scope_of(consumer.name, name)
                    if scope is not None:
                        found.append(scope)
        if not found:
            raise ExportError(
                f"Expected `float_layers` to name layers with weights (their ops are what stays in float). "
                f"Received: {name!r}, whose call reads no weight in the traced model"
            )
        scopes.extend(found)
    return list(dict.fromkeys(scopes))


def _ops(blob: bytes) -> list[tuple[str, list[str]]]:
    """`(output tensor name, names of its constant inputs)` of each op in the file's main graph."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(blob, 0)
    graph, buffers = model.subgraphs[0], model.buffers or []

    def name(index: int) -> str:
        raw = graph.tensors[index].name
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def constant(index: int) -> bool:
        buffer = graph.tensors[index].buffer
        return 0 < buffer < len(buffers) and buffers[buffer].data is not None and len(buffers[buffer].data) > 0

    ops = []
    for operator in graph.operators or []:
        outputs = [i for i in (operator.outputs if operator.outputs is not None else []) if i >= 0]
        inputs = [i for i in (operator.inputs if operator.inputs is not None else []) if i >= 0]
        if outputs:
            ops.append((name(outputs[0]), [name(i) for i in inputs if constant(i)]))
    return ops


def float_nodes(calibrated: bytes, scopes: Sequence[str]) -> list[str]:
    """The nodes (op output names) of the calibrated file that belong to one of `scopes`.

    An op belongs to a layer when its output is named in the layer's scope or, for an op whose
    output is a model output (named `Identity`), when one of its weights is.
    """
    prefixes = tuple(scope + "/" for scope in scopes)

    def ours(tensor_name: str) -> bool:
        return any(part.startswith(prefixes) for part in tensor_name.split(";"))

    nodes = [output for output, weights in _ops(calibrated) if ours(output) or any(map(ours, weights))]
    if not nodes:
        raise ExportError(
            f"float_layers: no op of the converted file belongs to the layers' scopes {list(scopes)}; "
            "the converter folded them into other ops"
        )
    return nodes


def quantize_keeping_float(calibrated: bytes, scopes: Sequence[str], io_dtype: str) -> bytes:
    """The int8 file from a calibrated float file, the ops of `scopes` left in float."""
    import tensorflow as tf
    # The converter's own quantizer entry point; tf.lite has no public one that takes a deny list
    # except QuantizationDebugger, which also builds and runs a debug model.
    from tensorflow.lite.python.convert import mlir_quantize

    io = tf.as_dtype(io_dtype)
    return mlir_quantize(
        calibrated, input_data_type=io, output_data_type=io, denylisted_nodes=float_nodes(calibrated, scopes)
    )
