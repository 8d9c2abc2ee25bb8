"""The `export`, `inspect` and `bench` subcommands of the kstruct CLI.

Argument parsing and file handling only; the work is done by `tflite_export`.
`kstruct/cli.py` calls `add_subcommands(subparsers)`; each handler takes the parsed
arguments and returns an exit code. Bad input prints one line
`kstruct: error: ...` on stderr and returns 2, with no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

EXIT_OK = 0
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2."""


def _fail(message: str) -> int:
    print(f"kstruct: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _atomic_write(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temp file in the same directory and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tflite", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_calibration(path: str):
    import numpy as np

    if not os.path.isfile(path):
        raise _UsageError(f"calibration file {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise _UsageError(f"cannot read calibration file {path!r} as .npz or .npy: {e}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        if not loaded.files:
            raise _UsageError(f"calibration file {path!r} holds no arrays")
        return loaded["x"] if "x" in loaded.files else loaded[loaded.files[0]]

def _read_tflite(path: str) -> bytes:
    from tflite_export import ExportError, read_model

    if not os.path.isfile(path):
        raise _UsageError(f"model file {path!r} does not exist")
    try:
        return read_model(path)
    except ExportError:
        raise _UsageError(f"{path!r} is not a TFLite file (no 'TFL3' identifier)") from None


def _handle(run):
    """Turns our errors into one stderr line and exit code 2."""

    def handler(args: argparse.Namespace) -> int:
        from tflite_export import ExportError

        try:
            return run(args)
        except (_UsageError, ExportError) as e:
            return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)

    handler.__name__ = run.__name__
    handler.__doc__ = run.__doc__
    return handler


@_handle
def export_command(args: argparse.Namespace) -> int:
    """kstruct export MODEL.keras --target T [--data calib.npz] --out model.tflite"""
    from tflite_export import TARGETS, ExportError, convert

    if args.target not in TARGETS:
        raise ExportError(f"Expected `target` to be one of {TARGETS}. Received: target={args.target!r}")
    if not os.path.isfile(args.model):
        raise _UsageError(f"model file {args.model!r} does not exist")
    if os.path.exists(args.out) and not args.overwrite:
        raise _UsageError(f"{args.out!r} exists; pass --overwrite to replace it")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise _UsageError(f"output directory {out_dir!r} does not exist")
    data = _load_calibration(args.data) if args.data else None
    blob = convert(args.model, args.target, data, allow_flex=args.allow_flex)
    if args.target == "gpu":  # run it on LiteRT's GPU accelerator; a failure is an error, no device a note
        from tflite_export import run_on_gpu

        print(f"gpu run check: {run_on_gpu(blob).raise_for_failure().message}")
    _atomic_write(args.out, blob)
    print(f"wrote {args.out} ({len(blob)} bytes, target={args.target})")
    return EXIT_OK


@_handle
def inspect_command(args: argparse.Namespace) -> int:
    """kstruct inspect model.tflite [--json]"""
    from tflite_export import analyze

    analysis = analyze(_read_tflite(args.model))
    print(analysis.to_json(indent=2) if args.json else analysis.to_text())
    return EXIT_OK


@_handle
def bench_command(args: argparse.Namespace) -> int:
    """kstruct bench model.tflite [--threads N] [--accelerator cpu|gpu] [--runs N]"""
    from tflite_export import benchmark

    result = benchmark(_read_tflite(args.model), threads=args.threads, runs=args.runs, accelerator=args.accelerator)
    print(json.dumps(result.to_dict()))
    return EXIT_OK


def add_subcommands(subparsers) -> None:
    """Registers `export`, `inspect` and `bench` on an argparse subparsers object.

    Each subparser gets `func=<handler>`; the caller runs `args.func(args)` and
    exits with the returned code.
    """
    p = subparsers.add_parser("export", help="convert a .keras model to a .tflite file for a target")
    p.add_argument("model", help="path to a .keras file")
    # Not argparse `choices`: an unknown target must give our one-line error.
    p.add_argument("--target", required=True, help="float32, dynamic, float16, int8, int16x8, gpu, edgetpu or micro")
    p.add_argument("--data", help="calibration inputs as .npz (array 'x', or the first array)")
    p.add_argument("--out", required=True, help="output .tflite path (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--allow-flex", action="store_true", help="allow SELECT_TF_OPS (Flex) ops")
    p.set_defaults(func=export_command, handler=export_command)

    p = subparsers.add_parser("inspect", help="show ops, dtypes, sizes and GPU verdict of a .tflite file")
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=inspect_command, handler=inspect_command)

    p = subparsers.add_parser("bench", help="time a .tflite file on LiteRT")
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--accelerator", default="cpu", help="cpu or gpu")
    p.add_argument("--runs", type=int, default=50)
    p.set_defaults(func=bench_command, handler=bench_command)
