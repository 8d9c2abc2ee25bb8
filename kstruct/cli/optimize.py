"""`kstruct optimize MODEL.keras --strategy S --data DATA.npz --out DIR`: run a strategy on a saved model."""

from __future__ import annotations

import argparse

from kstruct.cli._files import (
    TRAINING_NPZ_HELP,
    add_loading_options,
    import_modules,
    load_keras_model,
    load_training_npz,
)
from kstruct.cli._usage import UsageError, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("optimize", help="optimize a saved .keras model with a strategy")
    p.add_argument("model", help="a .keras or .h5 file (Keras 3 or tf_keras)")
    p.add_argument("--strategy", required=True, help="e.g. 'prune(0.75)' or 'prune(2:4) + qat'")
    p.add_argument("--data", required=True, help=TRAINING_NPZ_HELP)
    p.add_argument("--target", default="int8", help="TFLite target (default int8)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs per training step (default 2)")
    p.add_argument("--loss", default=None, help="loss for an uncompiled model, e.g. sparse_categorical_crossentropy")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--teacher", default=None, help="a .keras or .h5 file that distill steps learn from (default: the model)")
    p.add_argument("--tensorboard-dir", default=None, help="log every training step's epochs there for TensorBoard")
    add_loading_options(p)
    p.set_defaults(run=run)


def _check_loss(name: str | None) -> None:
    """A misspelt loss fails here, not after the original model has been measured."""
    import keras

    if name is None:
        return
    try:
        keras.losses.get(name)
    except (ValueError, TypeError):
        raise UsageError(
            f"unknown loss {name!r}; pass a Keras loss name, e.g. --loss sparse_categorical_crossentropy"
        ) from None


def run(args: argparse.Namespace) -> int:
    import kstruct

    import_modules(args.imports)  # first: a module may register custom steps as well as layers
    strategy = kstruct.Strategy.parse(args.strategy)  # bad strategies fail before anything slow
    strategy.validate(args.target)
    _check_loss(args.loss)
    kstruct.outputs.check_can_write(args.out, overwrite=args.overwrite, flag="--overwrite")
    train, validation = load_training_npz(args.data)
    model = load_keras_model(args.model, unsafe=args.unsafe_deserialization)
    # A teacher only predicts: its compile settings are never used (and a tf_keras file's would not load).
    teacher = load_keras_model(args.teacher, compile=False, unsafe=args.unsafe_deserialization) if args.teacher else None
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
