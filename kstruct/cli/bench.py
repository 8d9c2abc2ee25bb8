"""`kstruct bench model.tflite [--threads N] [--accelerator cpu|gpu] [--runs N]`: time a file on LiteRT."""

from __future__ import annotations

import argparse
import json

from kstruct.cli._files import read_tflite
from kstruct.cli._usage import positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time a .tflite file on LiteRT")
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--accelerator", default="cpu", help="cpu or gpu")
    p.add_argument("--runs", type=positive_int, default=50)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tflite_export import benchmark

    result = benchmark(read_tflite(args.model), threads=args.threads, runs=args.runs, accelerator=args.accelerator)
    print(json.dumps(result.to_dict()))
    return 0
