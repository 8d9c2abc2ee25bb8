"""Helpers for the QAT tests: calibrating ranges, reading a converted file's ops and tensors on LiteRT."""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def interpreter(blob: bytes) -> Interpreter:
    # Without the default delegates, so the op list shows the kernels, not "DELEGATE".
    it = Interpreter(model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def op_names(blob: bytes) -> list[str]:
    return [op["op_name"] for op in interpreter(blob)._get_ops_details()]


def non_integer_tensors(blob: bytes) -> list[str]:
    """Tensors that are neither int8 nor int32 (int32: biases and shape operands)."""
    return [
        f"{t['name']} ({np.dtype(t['dtype']).name})"
        for t in interpreter(blob).get_tensor_details()
        if np.dtype(t["dtype"]) not in (np.dtype("int8"), np.dtype("int32"))
    ]


def float_fallback_ops(blob: bytes) -> list[str]:
    """QUANTIZE/DEQUANTIZE ops: a float island or a requantization inside the graph."""
    return [name for name in op_names(blob) if name in ("QUANTIZE", "DEQUANTIZE")]


def weight_tensors(blob: bytes, op_name: str) -> list[dict]:
    """The weight tensor (input 1) of every `op_name` op, with its values and quantization."""
    it = interpreter(blob)
    details = {t["index"]: t for t in it.get_tensor_details()}
    found = []
    for op in it._get_ops_details():
        if op["op_name"] == op_name:
            tensor = details[op["inputs"][1]]
            found.append(dict(tensor, values=it.get_tensor(tensor["index"])))
    return found


def calibrate(model, x, batches: int = 2):
    """Runs `model` in training mode on `x` so the activation ranges (and BN statistics) see data."""
    for batch in np.array_split(x, batches):
        model(batch, training=True)
    return model


def output_step(blob: bytes) -> float:
    """The scale of the file's (first) int8 output: one step of its grid."""
    return float(interpreter(blob).get_output_details()[0]["quantization"][0])


def assert_within_one_step(blob: bytes, qat_model, x, *, steps: int = 1, exact: float = 0.95) -> None:
    """The file's outputs equal the QAT model's up to rounding: at most `steps` int8 steps apart, an `exact` fraction equal."""
    import tflite_export

    expected = np.asarray(qat_model.predict(x, verbose=0))
    actual = np.asarray(tflite_export.predict(blob, x))
    step = output_step(blob)
    np.testing.assert_allclose(actual, expected, atol=step * (steps + 0.01) + 1e-6, rtol=0)
    equal = np.mean(np.isclose(actual, expected, atol=1e-5, rtol=0))
    assert equal >= exact, f"only {equal:.1%} of the outputs are equal"


def fresh_python(code: str, **env) -> "subprocess.CompletedProcess":
    """Runs `code` in a new interpreter that sees this checkout of kstruct (extra environment in `env`)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import kstruct

    root = str(Path(kstruct.__file__).resolve().parents[1])
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env)
    environment["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
