"""LiteRT helpers: load a file, quantize inputs with its own scale/zero-point, run, dequantize.

Everything here runs on `ai_edge_litert` (the runtime phones ship), never on
`tf.lite.Interpreter`, and imports neither TensorFlow nor Keras: this module works
on a machine where only `ai-edge-litert` is installed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tflite_export._isolate import run_isolated
from tflite_export.errors import ExportError

_TFLITE_IDENTIFIER = b"TFL3"


def read_model(model: bytes | str | os.PathLike) -> bytes:
    """Returns the flatbuffer bytes of `model` (bytes, or a path to a `.tflite` file).

    Raises:
        ExportError: the path does not exist or the content is not a TFLite file.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        blob = bytes(model)
        origin = f"{len(blob)} bytes"
    elif isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise ExportError(f"Expected a path to a .tflite file. Received: {os.fspath(model)!r} (no such file)")
        with open(model, "rb") as f:
            blob = f.read()
        origin = repr(os.fspath(model))
    else:
        raise ExportError(
            f"Expected TFLite flatbuffer bytes or a path to a .tflite file. Received: {type(model).__name__}"
        )
    if len(blob) < 8 or blob[4:8] != _TFLITE_IDENTIFIER:
        raise ExportError(f"Expected a TFLite file (flatbuffer identifier 'TFL3'). Received: {origin}, which is not one")
    return blob


def load_interpreter(blob: bytes, *, threads: int = 1):
    """Returns an allocated `ai_edge_litert.interpreter.Interpreter` for `blob`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Converts float `x` to the tensor's dtype with the file's scale and zero-point.

    Float tensors get a plain cast; integer tensors without quantization parameters
    (scale 0) too.
    """
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer) or scale == 0:
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Converts an output tensor to float32 with the file's scale and zero-point."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale != 0:
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return np.asarray(y, dtype=np.float32)


def input_shape_text(detail: dict[str, Any]) -> str:
    """The input shape as users see it in Keras: `(None, 28, 28, 1)`."""
    dims = [None] + [int(d) for d in detail["shape_signature"][1:]]
    return str(tuple(None if d is None or d < 0 else d for d in dims))


def keras_input_structure(model) -> Any:
    """`model.input` (a dict or list for multi-input functional models); Sequential models have one input."""
    try:
        return model.input
    except (AttributeError, ValueError):
        inputs = list(model.inputs)
        return inputs[0] if len(inputs) == 1 else inputs


def _tensor_name(detail: dict[str, Any]) -> str:
    # The converter may prefix a signature name and suffix an output index.
    return detail["name"].removeprefix("serving_default_").split(":")[0]


def match_inputs(details: list[dict[str, Any]], x: Any) -> list[np.ndarray]:
    """Orders `x` (an array, a list in the file's input order, or a dict by input name) like `details`.

    Multi-input files keep the Keras input names (convert names each input tensor
    after its `keras.Input`), so a dict is matched by name, which survives any
    reordering by the converter.
    """
    if isinstance(x, dict):
        by_name = {_tensor_name(d): d for d in details}
        missing = [name for name in by_name if name not in x]
        if missing or len(x) != len(details):
            raise ExportError(
                f"Expected inputs named {sorted(by_name)} (the file's input tensors). Received: {sorted(x)}"
            )
        return [np.asarray(x[_tensor_name(d)]) for d in details]
    arrays = [np.asarray(v) for v in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]
    if len(arrays) != len(details):
        raise ExportError(
            f"Expected a TFLite file with {len(arrays)} input(s). Received: a file with {len(details)} inputs"
        )
    return arrays


def _check_shape(x: np.ndarray, detail: dict[str, Any]) -> None:
    expected = tuple(int(d) for d in detail["shape_signature"][1:])
    if x.ndim != len(expected) + 1 or any(e > 0 and e != s for e, s in zip(expected, x.shape[1:])):
        raise ExportError(f"x has shape {x.shape}; the model expects inputs of shape {input_shape_text(detail)}")


def run_all(interpreter, x: Any) -> list[np.ndarray]:
    """Runs every row of `x` through the interpreter; returns float outputs in the file's output order.

    `x` is an array for a single-input file, or a list / name-keyed dict of arrays.
    Files with a static batch (batch 1 by default in `convert`) are run chunk by
    chunk, padding the last chunk; files with a dynamic batch are resized once.
    """
    details = interpreter.get_input_details()
    arrays = match_inputs(details, x)
    for array, detail in zip(arrays, details):
        _check_shape(array, detail)
    rows = len(arrays[0])
    if any(len(a) != rows for a in arrays):
        raise ExportError(f"Expected the same number of rows in every input. Received: {[len(a) for a in arrays]}")
    static_batch = int(details[0]["shape_signature"][0])
    if static_batch <= 0:
        for array, detail in zip(arrays, details):
            interpreter.resize_tensor_input(detail["index"], list(array.shape), strict=False)
        interpreter.allocate_tensors()
        static_batch = max(rows, 1)
    outputs = interpreter.get_output_details()
    chunks: list[list[np.ndarray]] = [[] for _ in outputs]
    for start in range(0, rows, static_batch):
        n = min(static_batch, rows - start)
        for array, detail in zip(arrays, details):
            chunk = array[start : start + static_batch]
            if n < static_batch:
                pad = np.zeros((static_batch - n,) + chunk.shape[1:], dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            interpreter.set_tensor(detail["index"], quantize(chunk, detail))
        interpreter.invoke()
        for i, out in enumerate(outputs):
            chunks[i].append(dequantize(interpreter.get_tensor(out["index"]), out)[:n])
    return [np.concatenate(c) if c else np.zeros((0,)) for c in chunks]


def _run_blob(blob: bytes, x: Any) -> list[np.ndarray]:
    """Child-process side of `predict(isolate=True)`."""
    return run_all(load_interpreter(blob), x)


def predict(model: bytes | str | os.PathLike, x: Any, *, isolate: bool = False) -> np.ndarray | list[np.ndarray]:
    """Runs every row of `x` on LiteRT and returns float outputs.

    Integer inputs are quantized with the file's own scale and zero-point, and
    integer outputs dequantized, so the result is comparable with Keras's output.

    Args:
        model: TFLite bytes, or a path to a `.tflite` file.
        x: inputs, shape `(n, ...)`, float; for a multi-input file, a list in the
            file's input order or a dict keyed by input name.
        isolate: run LiteRT in a child process, so that a crash of its C++
            kernels on a broken or untrusted file becomes an `ExportError`
            instead of killing this process. Off by default: every file
            `convert` writes (recurrent ones included, WHILE loops or unrolled)
            runs cleanly in-process, and the child costs about half a second
            (it imports only `ai_edge_litert`).

    Returns:
        float32 array `(n, ...)` for single-output files; a list of arrays otherwise.

    Raises:
        ExportError: `model` is not a TFLite file, `x` has the wrong shape, or
            (with `isolate=True`) LiteRT crashed.
    """
    blob = read_model(model)
    if isolate:
        outputs = run_isolated(
            _run_blob, blob, x,
            what="LiteRT, running the file,",
            hint="The file or its inputs break a kernel: check the inputs' range (token ids inside the vocabulary)",
            reuse=True,
        )
    else:
        outputs = run_all(load_interpreter(blob), x)
    return outputs[0] if len(outputs) == 1 else outputs
