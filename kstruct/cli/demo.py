"""`kstruct demo`: the example CNN on the bundled MNIST digits, trained, then optimized."""

from __future__ import annotations

import argparse

from kstruct.cli._usage import positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="optimize the example CNN on the bundled MNIST digits")
    p.add_argument("--out", default="out", help="output directory (default out)")
    p.add_argument("--strategy", default=None, help="strategy string (default: kstruct.cli.demo_runner.DEMO_STRATEGY)")
    p.add_argument("--target", default="int8")
    p.add_argument("--epochs", type=positive_int, default=2, help="fine-tuning epochs per step (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kstruct.cli.demo_runner import DEMO_STRATEGY, run_demo

    run_demo(
        args.out,
        strategy=args.strategy or DEMO_STRATEGY,
        target=args.target,
        epochs=args.epochs,
        overwrite=args.overwrite,
    )
    return 0
