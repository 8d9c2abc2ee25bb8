"""`kstruct export MODEL.keras --target T [--data calib.npz] --out model.tflite`: convert with tflite_export."""

from __future__ import annotations

import argparse
import os

from kstruct.cli._files import add_loading_options, import_modules, load_calibration, load_keras_model
from kstruct.outputs import check_can_write, write_file
from kstruct.cli._usage import UsageError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="convert a .keras model to a .tflite file for a target")
    p.add_argument("model", help="path to a .keras or .h5 file (Keras 3 or tf_keras)")
    # Not argparse `choices`: an unknown target gets tflite_export's own message listing the valid ones.
    p.add_argument("--target", required=True, help="float32, dynamic, float16, int8, int16x8, gpu, edgetpu or micro")
    p.add_argument("--data", help="calibration inputs as .npz (array 'x', or the first array) or .npy")
    p.add_argument("--out", required=True, help="output .tflite path (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--allow-flex", action="store_true", help="allow SELECT_TF_OPS (Flex) ops")
    add_loading_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tflite_export import convert
    from tflite_export.targets import get_target

    get_target(args.target)  # an unknown target fails before the model loads
    import_modules(args.imports)
    if not os.path.exists(args.model):
        raise UsageError(f"model file {args.model!r} does not exist")
    check_can_write(args.out, overwrite=args.overwrite, flag="--overwrite", directory=False)  # links refused too
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output directory {out_dir!r} does not exist")
    data = load_calibration(args.data) if args.data else None
    # Loaded here, not by convert: a file Keras refuses (safe mode, damage) becomes one line, not a traceback.
    # compile=False: conversion needs no compile settings, so a tf_keras file (whose settings Keras 3
    # cannot use) still converts.
    model = load_keras_model(args.model, compile=False, unsafe=args.unsafe_deserialization)
    blob = convert(model, args.target, data, allow_flex=args.allow_flex)
    if args.target == "gpu":  # run it on LiteRT's GPU accelerator; a failure is an error, no device a note
        from tflite_export import run_on_gpu

        print(f"gpu run check: {run_on_gpu(blob).raise_for_failure().message}")
    write_file(args.out, blob, overwrite=args.overwrite, flag="--overwrite")
    print(f"wrote {args.out} ({len(blob)} bytes, target={args.target})")
    return 0
