"""The `kstruct` command: argument parsing only; the work is done by the library.

Bad input ends with one line `kstruct: error: ...` on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import zipfile
from pathlib import Path

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad command-line input; its message is printed as the one error line."""


def fail(message: str) -> int:
    print(f"kstruct: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def load_keras_model(path: str):
    """Loads a `.keras` file, or raises UsageError saying why it is not one."""
    import keras

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(file):
        raise UsageError(f"{path} is not a Keras model file (.keras): it is not a .keras zip archive")
    try:
        return keras.models.load_model(file)
    except Exception as err:  # Keras raises many types for files that are not models
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{path} is not a Keras model file (.keras): {reason}") from None


def load_npz(path: str, *, required=("x", "y")) -> dict:
    """Loads an `.npz` of named arrays; raises UsageError naming missing arrays."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"data file {path} does not exist")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{path} is not a numpy .npz file: {reason}") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "no arrays"
        raise UsageError(
            f"{path} has no array {' or '.join(repr(m) for m in missing)} (found: {found}); "
            "save it with numpy.savez(path, x=inputs, y=labels)"
        )
    return arrays


def load_training_npz(path: str) -> tuple[tuple, tuple | None]:
    """`(x, y)` from an `.npz`, and `(x_val, y_val)` when it holds both (else None)."""
    arrays = load_npz(path)
    validation = (arrays["x_val"], arrays["y_val"]) if "x_val" in arrays and "y_val" in arrays else None
    return (arrays["x"], arrays["y"]), validation


def _optimize(args) -> int:
    import kstruct

    strategy = kstruct.Strategy.parse(args.strategy)  # bad strategies fail before anything slow
    kstruct.outputs.check_can_write(args.out, overwrite=args.overwrite, flag="--overwrite")
    train, validation = load_training_npz(args.data)
    model = load_keras_model(args.model)
    teacher = load_keras_model(args.teacher) if args.teacher else None
    result = kstruct.optimize(
        model,
        strategy,
        train_data=train,
        validation_data=validation,
        epochs=args.epochs,
        target=args.target,
        output_dir=args.out,
        overwrite=args.overwrite,
        loss=args.loss,
        batch_size=args.batch_size,
        teacher=teacher,
        tensorboard_dir=args.tensorboard_dir,
    )
    print()
    print(result.report.to_text())
    print(
        f"\nkstruct: wrote model.keras, model.tflite, report.json, report.md, "
        f"stages.png, layers.png and training.png to {args.out}/"
    )
    return 0


def _demo(args) -> int:
    from kstruct.demo import run_demo

    run_demo(args.out, strategy=args.strategy, target=args.target, epochs=args.epochs, overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kstruct.demo import DEMO_STRATEGY

    parser = argparse.ArgumentParser(prog="kstruct", description="Shrink Keras 3 models and ship them as TFLite.")
    commands = parser.add_subparsers(dest="command", required=True)

    opt = commands.add_parser("optimize", help="optimize a saved .keras model with a strategy")
    opt.add_argument("model", help="a .keras file")
    opt.add_argument("--strategy", required=True, help="e.g. 'prune(0.75)' or 'prune(2:4)'")
    opt.add_argument("--data", required=True, help=".npz with arrays x and y (optional x_val, y_val)")
    opt.add_argument("--target", default="int8", help="TFLite target (default int8)")
    opt.add_argument("--out", required=True, help="output directory")
    opt.add_argument("--epochs", type=int, default=None, help="epochs per training step (default 2)")
    opt.add_argument("--loss", default=None, help="loss for an uncompiled model, e.g. sparse_categorical_crossentropy")
    opt.add_argument("--batch-size", type=int, default=32)
    opt.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    opt.add_argument("--teacher", default=None, help="a .keras file that distill steps learn from (default: the model)")
    opt.add_argument("--tensorboard-dir", default=None, help="log every training step's epochs there for TensorBoard")
    opt.set_defaults(handler=_optimize)

    demo = commands.add_parser("demo", help="optimize the example CNN on the bundled MNIST digits")
    demo.add_argument("--out", default="out", help="output directory (default out)")
    demo.add_argument("--strategy", default=DEMO_STRATEGY)
    demo.add_argument("--target", default="int8")
    demo.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per step (default 2)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    demo.set_defaults(handler=_demo)

    for add_subcommands in _subcommand_adders():
        add_subcommands(commands)
    return parser


def _subcommand_adders():
    """The modules that add their own subcommands (export/inspect/bench, search)."""
    from kstruct import cli_export, cli_search

    return [cli_export.add_subcommands, cli_search.add_subcommands]


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silences what native libraries write to stderr (TensorFlow's start-up lines) for the block.

    TensorFlow 2.21 prints them whatever TF_CPP_MIN_LOG_LEVEL says, which would bury
    the one-line errors this command promises. Python exceptions still surface.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet_native_stderr():
        import keras  # noqa: F401  (loads TensorFlow once, quietly)
    args = build_parser().parse_args(argv)
    from kstruct.errors import KstructError

    try:
        return args.handler(args)
    except UsageError as err:
        return fail(str(err))
    except KstructError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        return fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
