"""The GPU op table against LiteRT's GPU accelerator: one tiny file per op, RUN, one row per op.

    python benchmarks/gpu_op_table.py              # every op we can produce, ~1-2 min on lavapipe
    python benchmarks/gpu_op_table.py --ops CUMSUM,TOPK_V2_10

For each op of `tflite_export.targets.GPU_OPS` (plus a few off-table controls) a one-op
tf.function on a small static float32 input is converted with TF's converter directly (so the
table cannot refuse it), the file is checked to really contain the op, then
`tflite_export.run_on_gpu` runs it (child process, GPU only, fp32) and compares with the CPU.
Columns: the table's word (op in GPU_OPS), `check(blob, "gpu")`'s verdict today, the run's
verdict, and the evidence. Ops we cannot produce from TF are listed at the end.
See docs/deployment.md, "The GPU op table against the runtime".
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's packages

import numpy as np  # noqa: E402

import tflite_export  # noqa: E402
from tflite_export import targets as targets_lib  # noqa: E402

X4 = (1, 4, 4, 4)  # NHWC, channels a multiple of 4 (the GPU's layout)
NOT_PRODUCED = {
    "DENSIFY": "needs a sparse constant the TF converter only emits for pruned Keras weights read as sparse",
    "DYNAMIC_UPDATE_SLICE": "comes from StableHLO/XLA graphs, not from a plain tf.function",
    "EMBEDDING_LOOKUP": "the converter emits GATHER for tf.nn.embedding_lookup",
    "LSTM": "Keras LSTM converts to UNIDIRECTIONAL_SEQUENCE_LSTM, not LSTM",
    "STABLEHLO_CLAMP": "comes from StableHLO graphs only",
}


def _tf():
    import tensorflow as tf

    return tf


def _w(*shape):
    return _tf().constant(np.random.default_rng(0).uniform(-1, 1, shape).astype("float32"))


def _f(x):
    """A bool or int result as float32: a CAST the GPU table also holds."""
    return _tf().cast(x, "float32")


def _prelu():
    """Keras's PReLU: the converter fuses its graph into one PRELU (a hand-written one stays SUB/MUL)."""
    import keras

    layer = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25))
    layer.build(X4)
    return layer


def _cases():
    """{row name: (op the file must contain, fn, input shape, mode)}; mode None, "int8" or "float16"."""
    tf = _tf()
    nn, m = tf.nn, tf.math
    c4 = _w(4)
    unary = {
        "ABS": tf.abs, "CEIL": lambda x: m.ceil(x * 4), "COS": tf.cos, "ELU": lambda x: nn.elu(x - 0.5),
        "EXP": tf.exp, "FLOOR": lambda x: m.floor(x * 4), "LEAKY_RELU": lambda x: nn.leaky_relu(x - 0.5),
        "LOG": m.log, "LOGISTIC": tf.sigmoid, "NEG": tf.negative, "RELU": lambda x: nn.relu(tf.sin(x * 7)),  # after SUB/MUL the converter fuses it
        "RELU6": lambda x: nn.relu6(tf.exp(x * 3)), "RELU_N1_TO_1": lambda x: tf.clip_by_value(m.log(x), -1.0, 1.0),
        "RSQRT": m.rsqrt, "SIGN": lambda x: tf.sign(x - 0.5), "SIN": tf.sin, "SQRT": tf.sqrt, "SQUARE": tf.square,
        "TANH": tf.tanh, "GELU": lambda x: nn.gelu(x, approximate=False),
        "HARD_SWISH": lambda x: x * nn.relu6(x + 3.0) * (1.0 / 6.0), "SOFTMAX": nn.softmax,
        "POW": lambda x: tf.pow(x, c4 + 2.0),
    }
    cases = {op: (op, fn, X4, None) for op, fn in unary.items()}
    binary = {
        "ADD": lambda x: x + c4, "SUB": lambda x: x - c4, "MUL": lambda x: x * c4,
        "DIV": lambda x: x / (x + 1.0), "ADD_N": lambda x: tf.add_n([x, x * 2.0, x * 3.0]),
        "ATAN2": lambda x: m.atan2(x - 0.5, x + 0.1), "MAXIMUM": lambda x: tf.maximum(x, c4),
        "MINIMUM": lambda x: tf.minimum(x, c4), "FLOOR_DIV": lambda x: m.floordiv(x * 8, 3.0),
        "FLOOR_MOD": lambda x: m.floormod(x * 8, 3.0), "SQUARED_DIFFERENCE": lambda x: m.squared_difference(x, c4),
        "EQUAL": lambda x: _f(tf.equal(m.floor(x * 2), 1.0)), "NOT_EQUAL": lambda x: _f(tf.not_equal(m.floor(x * 2), 1.0)),
        "GREATER": lambda x: _f(x > c4), "GREATER_EQUAL": lambda x: _f(x >= c4), "LESS": lambda x: _f(x < c4),
        "LESS_EQUAL": lambda x: _f(x <= c4), "LOGICAL_AND": lambda x: _f(tf.logical_and(x > 0.3, x < 0.7)),
        "SELECT_V2": lambda x: tf.where(x > 0.5, x, 0.0), "SELECT": lambda x: tf.raw_ops.Select(condition=x > 0.5, x=x, y=-x),
        "CAST": lambda x: _f(tf.cast(x * 10, "int32")),
    }
    cases |= {op: (op, fn, X4, None) for op, fn in binary.items()}
    shaped = {
        "AVERAGE_POOL_2D": lambda x: nn.avg_pool2d(x, 2, 2, "VALID"),
        "MAX_POOL_2D": lambda x: nn.max_pool2d(x, 2, 2, "VALID"),
        "CONV_2D": lambda x: nn.conv2d(x, _w(3, 3, 4, 4), 1, "SAME"),
        "DEPTHWISE_CONV_2D": lambda x: nn.depthwise_conv2d(x, _w(3, 3, 4, 1), [1, 1, 1, 1], "SAME"),
        "TRANSPOSE_CONV": lambda x: nn.conv2d_transpose(x, _w(3, 3, 4, 4), (1, 8, 8, 4), 2, "SAME"),
        "BATCH_MATMUL": lambda x: tf.matmul(x, x * 2.0),
        "BATCH_MATMUL_SAME": lambda x: tf.matmul(x, x),
        "CONCATENATION": lambda x: tf.concat([x, x * 2.0], -1),
        "DEPTH_TO_SPACE": lambda x: nn.depth_to_space(x, 2),
        "SPACE_TO_DEPTH": lambda x: nn.space_to_depth(x, 2),
        "GATHER": lambda x: tf.gather(x, [2, 0, 1, 3], axis=-1),
        "MEAN": lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=True),
        "SUM": lambda x: tf.reduce_sum(x, axis=-1, keepdims=True),
        "REDUCE_MAX": lambda x: tf.reduce_max(x, axis=-1, keepdims=True),
        "REDUCE_MIN": lambda x: tf.reduce_min(x, axis=-1, keepdims=True),
        "REDUCE_PROD": lambda x: tf.reduce_prod(x, axis=-1, keepdims=True),
        "MIRROR_PAD": lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], "REFLECT"),
        "PAD": lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]),
        "PADV2": lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=1.0),
        "RESHAPE": lambda x: tf.reshape(x, (1, 16, 4)),
        "RESIZE_BILINEAR": lambda x: tf.image.resize(x, (8, 8), "bilinear"),
        "RESIZE_NEAREST_NEIGHBOR": lambda x: tf.image.resize(x, (8, 8), "nearest"),
        "SLICE": lambda x: tf.slice(x, [0, 1, 1, 0], [1, 2, 2, 4]),
        "STRIDED_SLICE": lambda x: x[:, ::2, 1:, :],
        "SPLIT": lambda x: tf.split(x, 2, axis=1),
        "SPLIT_V": lambda x: tf.split(x, [1, 3], axis=1),
        "TILE": lambda x: tf.tile(x, [1, 2, 1, 1]),
        "TRANSPOSE": lambda x: tf.transpose(x, [0, 2, 1, 3]),
        "ONE_HOT": lambda x: tf.one_hot(tf.cast(x * 4, "int32"), 4),
        "CUMSUM": lambda x: tf.cumsum(x, axis=-1),
        "CUMSUM_2D": lambda x: tf.cumsum(tf.reshape(x, (1, 64)), axis=-1),
        "TOPK_V2_8": lambda x: nn.top_k(tf.reshape(x, (1, 8, 8)), 3)[0],
        "TOPK_V2_10": lambda x: nn.top_k(x, 3)[0],
        "LOG_SOFTMAX": nn.log_softmax,
    }
    for name, fn in shaped.items():
        op = {"BATCH_MATMUL_SAME": "BATCH_MATMUL", "CUMSUM_2D": "CUMSUM", "TOPK_V2_8": "TOPK_V2", "TOPK_V2_10": "TOPK_V2"}.get(name, name)
        cases[name] = (op, fn, (1, 4, 4, 10) if name == "TOPK_V2_10" else X4, None)
    cases["PACK"] = ("PACK", lambda x: tf.stack([x, x * 2.0], axis=1), (1, 4, 4), None)
    cases["FULLY_CONNECTED"] = ("FULLY_CONNECTED", lambda x: tf.matmul(x, _w(16, 4)), (1, 16), None)
    prelu = _prelu()
    cases["PRELU"] = ("PRELU", lambda x: prelu(x - 0.5), X4, None)
    cases["DEQUANTIZE"] = ("DEQUANTIZE", lambda x: nn.conv2d(x, _w(3, 3, 4, 4), 1, "SAME"), X4, "float16")
    cases["QUANTIZE"] = ("QUANTIZE", lambda x: nn.conv2d(x, _w(3, 3, 4, 4), 1, "SAME"), X4, "int8")
    return cases


def build(fn, shape, mode: str | None) -> bytes:
    """One tf.function on a static float32 input, through TF's converter (no op table in the way)."""
    tf = _tf()
    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.uniform(0, 1, shape).astype("float32")] for _ in range(8))
    return converter.convert()


def measure(names: list[str] | None = None, *, timeout: float = 60.0) -> list[dict]:
    """One row per case: table / check / runtime / evidence. Never raises for one op's failure."""
    cases = _cases()
    rows = []
    for name in names or sorted(cases):
        if name in NOT_PRODUCED:
            continue
        op, fn, shape, mode = cases[name]
        row = {"case": name, "op": op, "table": "on table" if op in targets_lib.GPU_OPS else "off table"}
        try:
            blob = build(fn, shape, mode)
        except Exception as e:  # noqa: BLE001  (a converter refusal is a row, not a stop)
            rows.append(row | {"check": "-", "runtime": "not built", "evidence": f"{type(e).__name__}: {str(e)[:120]}"})
            continue
        ops = tflite_export.analyze(blob, gpu_analyzer=False).ops
        if op not in ops:
            rows.append(row | {"check": "-", "runtime": "not produced", "evidence": f"the file holds {ops}"})
            continue
        result = tflite_export.check(tflite_export.analyze(blob, gpu_analyzer=False), "gpu")
        verdict = tflite_export.run_on_gpu(blob, runs=1, warmup=0, timeout=timeout)
        rows.append(row | {
            "check": "pass" if result.ok else "refuse",
            "runtime": verdict.status,
            "evidence": f"ops {'+'.join(ops)}: {verdict.message}",
        })
    return rows


def disagrees(row: dict) -> bool:
    """The table passes what the runtime does not run right, or refuses what it runs."""
    if row["runtime"] not in tflite_export.gpu.STATUSES or row["runtime"] in ("no_device", "timed_out"):
        return False
    return (row["table"] == "on table") != (row["runtime"] == "accelerated")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", help="comma-separated case names (default: all)")
    parser.add_argument("--disagreements", action="store_true", help="print only rows where table and run differ")
    args = parser.parse_args(argv)
    names = args.ops.split(",") if args.ops else None
    unknown = sorted(set(names or ()) - set(_cases()) - set(NOT_PRODUCED))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {sorted(_cases())}")
    start = time.monotonic()
    rows = measure(names)
    print("| case | op | table | check | runtime | evidence |\n|---|---|---|---|---|---|")
    for row in rows:
        if not args.disagreements or disagrees(row):
            print(f"| {row['case']} | {row['op']} | {row['table']} | {row['check']} | {row['runtime']} | {row['evidence']} |")
    missing = sorted(targets_lib.GPU_OPS - set(_cases()) - set(NOT_PRODUCED))
    print(f"\n{sum(map(disagrees, rows))} disagreements in {len(rows)} files, {time.monotonic() - start:.0f} s")
    for op, why in sorted(NOT_PRODUCED.items()):
        print(f"not produced: {op}: {why}")
    if missing:
        print(f"no case written for: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
