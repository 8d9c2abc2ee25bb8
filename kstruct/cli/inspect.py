"""`kstruct inspect model.tflite [--json]`: ops, dtypes, sizes and target verdicts of a file."""

from __future__ import annotations

import argparse

from kstruct.cli._files import read_tflite


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="show ops, dtypes, sizes and GPU verdict of a .tflite file")
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tflite_export import analyze

    analysis = analyze(read_tflite(args.model))
    print(analysis.to_json(indent=2) if args.json else analysis.to_text())
    return 0
