"""The GPU check: does each exported file run fully on LiteRT's GPU accelerator, and agree with the CPU?

Two steps, because a GPU machine may have LiteRT but no TensorFlow:

    # here (TensorFlow installed): write the files to check into .gpu/
    python benchmarks/gpu_check.py prepare .gpu
    # on the machine with the Vulkan device (only ai-edge-litert and numpy needed):
    python benchmarks/gpu_check.py run .gpu

`run` calls `tflite_export.run_on_gpu` on every .tflite file in the folder (each in its own
child process, GPU only, fp32) and prints a table: verdict, device, max |GPU - CPU|, and the
median GPU and CPU milliseconds; `--json` prints one JSON line per file instead. On lavapipe
(a software Vulkan device) the GPU milliseconds mean nothing for speed.
See docs/deployment.md, "Checking a file on the GPU accelerator".
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's packages

import tflite_export  # noqa: E402  (TensorFlow-free: only `convert` imports it, lazily)


def prepare(folder: pathlib.Path) -> None:
    """Writes the example CNN (float32, gpu, int8) and MobileNetV2 0.35 96x96 (gpu) into `folder`."""
    import keras

    from kstruct.data import load_mnist_5k
    from kstruct.models import example_cnn

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    cnn = example_cnn()
    calibration = load_mnist_5k()[0][0][:100]
    # Logits, not softmax: an untrained net's softmax is ~1/1000 everywhere and would hide any difference.
    mobilenet = keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(96, 96, 3), weights=None, classifier_activation=None
    )
    for name, model, target in (
        ("cnn", cnn, "float32"),
        ("cnn", cnn, "gpu"),
        ("cnn", cnn, "int8"),
        ("mobilenetv2_035_96", mobilenet, "gpu"),
    ):
        path = folder / f"{name}_{target}.tflite"
        data = calibration if tflite_export.TARGET_TABLE[target].needs_data else None
        path.write_bytes(tflite_export.convert(model, target, data))
        print(path)


def _residual_net():
    """A small net with Add and Concatenate, the graph shapes a plain CNN lacks."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Add()([x, y])
    z = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Concatenate()([x, z])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="residual")


def table(runs: int) -> int:
    """Converts the example CNN, MobileNetV2/V3Small and a residual net for several targets, runs each
    on the GPU accelerator and prints a Markdown table (docs/deployment.md's)."""
    import tempfile

    import keras
    import numpy as np

    from kstruct.models import example_cnn

    keras.utils.set_random_seed(0)
    apps = dict(input_shape=(96, 96, 3), weights=None, classifier_activation=None)
    models = {
        "example CNN": (example_cnn(), ("float32", "float16", "dynamic", "int8", "gpu")),
        "MobileNetV2 0.35 96x96": (keras.applications.MobileNetV2(alpha=0.35, **apps), ("float32", "int8", "gpu")),
        "MobileNetV3Small 96x96": (keras.applications.MobileNetV3Small(**apps), ("float32", "int8", "gpu")),
        "residual (Add, Concatenate)": (_residual_net(), ("float32", "int8", "gpu")),
    }
    print("| model | target | verdict | max abs diff | largest output | GPU ms | CPU ms |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, (model, targets) in models.items():
            data = np.random.default_rng(0).uniform(0, 1, (50, *model.input_shape[1:])).astype("float32")
            for target in targets:
                path = pathlib.Path(folder, "m.tflite")
                try:
                    path.write_bytes(tflite_export.convert(model, target, data))
                except tflite_export.ExportError as e:
                    print(f"| {name} | {target} | conversion refused: {str(e).splitlines()[0]} | | | | |")
                    continue
                v = tflite_export.run_on_gpu(path, runs=runs, warmup=2, timeout=600)
                verdict = v.status if v.ok else f"{v.status}: {v.message}"
                print(f"| {name} | {target} | {verdict} | {_cell(v.max_abs_diff)} | {_cell(v.largest_output)} | {_cell(v.gpu_ms)} | {_cell(v.cpu_ms)} |",
                      flush=True)
    return 0


def _row(path: pathlib.Path, runs: int, out: pathlib.Path | None) -> dict:
    v = tflite_export.run_on_gpu(path, runs=runs, warmup=5, timeout=300)
    if out is not None:  # LiteRT's own log of the child, for whoever reads a surprising verdict
        (out / f"{path.stem}.log").write_text(v.log)
    return {"file": path.name, "status": v.status, "device": v.device, "software": v.software,
            "max_abs_diff": v.max_abs_diff, "gpu_ms": v.gpu_ms, "cpu_ms": v.cpu_ms, "message": v.message}


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run(folder: pathlib.Path, runs: int, as_json: bool, out: pathlib.Path | None = None) -> int:
    files = sorted(folder.glob("*.tflite"))
    if not files:
        print(f"gpu_check: no .tflite files in {folder}", file=sys.stderr)
        return 2
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in files:
        row = _row(path, runs, out)
        rows.append(row)
        if as_json:
            print(json.dumps(row), flush=True)
        if out is not None:
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    if not as_json:
        columns = ("file", "status", "device", "software", "max_abs_diff", "gpu_ms", "cpu_ms")
        table = [columns] + [tuple(_cell(r[c]) for c in columns) for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        for line in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
        for r in rows:
            print(f"{r['file']}: {r['message']}")
    return 0 if all(r["status"] == "accelerated" for r in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="prepare: write .tflite files (needs TF); run: check them on the GPU")
    parser.add_argument("command", choices=("prepare", "run", "table"))
    parser.add_argument("folder", type=pathlib.Path, nargs="?", default=pathlib.Path(".gpu"))
    parser.add_argument("--runs", type=int, default=50, help="timed runs per accelerator (run only)")
    parser.add_argument("--json", action="store_true", help="one JSON line per file (run only)")
    parser.add_argument("--out", type=pathlib.Path, help="also write results.jsonl and each file's LiteRT log here")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.folder)
        sys.exit(0)
    if args.command == "table":
        sys.exit(table(args.runs))
    sys.exit(run(args.folder, args.runs, args.json, args.out))
