"""`kstruct.optimize`: run a strategy's steps on a model, measure every stage, export for a target."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tflite_export

from kstruct.errors import KstructError
from kstruct.measure import measure_stage
from kstruct._graph import check_graph_model
from kstruct.outputs import write_directory
from kstruct.report import Report
from kstruct.strategy import Strategy, as_strategy
from kstruct.training import DEFAULT_EPOCHS, StepContext, TrainingData, split_validation


@dataclass
class OptimizationResult:
    """What `optimize` returns.

    Attributes:
        model: the final Keras model (stripped of pruning wrappers; after `qat`, the
            QAT model whose predictions the int8 file reproduces).
        tflite: the TFLite file for the target, as bytes.
        report: the stage-by-stage `Report`.
    """

    model: keras.Model
    tflite: bytes
    report: Report

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes `model.keras`, `model.tflite`, `report.json` and `report.md` into `directory`, atomically.

        Raises:
            OutputExistsError: if `directory` exists and is not empty, unless `overwrite=True`.
        """

        def fill(folder: Path) -> None:
            self.model.save(folder / "model.keras")
            (folder / "model.tflite").write_bytes(self.tflite)
            (folder / "report.json").write_text(self.report.to_json() + "\n")
            (folder / "report.md").write_text(self.report.to_markdown() + "\n")

        return write_directory(directory, fill, overwrite=overwrite)


def _check_target(target: str) -> None:
    if target not in tflite_export.TARGETS:
        raise KstructError(f"Expected `target` to be one of {tuple(tflite_export.TARGETS)}. Received: target={target!r}")


def _say(message: str, verbose) -> None:
    if verbose:
        print(message, flush=True)


def optimize(
    model: keras.Model,
    strategy: str | Strategy | Any,
    *,
    train_data,
    validation_data=None,
    epochs: int | None = None,
    target: str = "int8",
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    loss=None,
    optimizer=None,
    metrics=None,
    batch_size: int = 32,
    verbose: int | str = "auto",
) -> OptimizationResult:
    """Runs `strategy` on `model` and exports the result for `target`.

    Every stage (the original model, then each step) is measured the same way:
    Keras and TFLite accuracy on the validation data, sparsity, parameters and
    non-zero parameters, TFLite bytes and gzipped bytes, one-image latency on LiteRT.

    Args:
        model: a Sequential or functional Keras model. It is never modified.
        strategy: `"prune(0.75)"`, `"prune(2:4) + qat"`, a `kstruct.Strategy` or step objects.
        train_data: `(x, y)` arrays, a `tf.data.Dataset` or a `keras.utils.PyDataset` of `(x, y)` batches.
        validation_data: the same forms. Default: the last 10% of array `train_data`
            is held out (for datasets, the training data is used and the report says so).
        epochs: epochs per training step (default 2; a step's own `epochs=` wins).
        target: a `tflite_export.TARGETS` name.
        output_dir: if given, `result.save(output_dir, overwrite=overwrite)`.
        loss, optimizer, metrics: how to compile an uncompiled model for training.
        batch_size: batch size for array data.
        verbose: Keras's progress bar setting; 0 also silences the stage lines.

    Returns:
        An `OptimizationResult`.
    """
    check_graph_model(model, "kstruct.optimize")
    plan = as_strategy(strategy)
    _check_target(target)
    plan.validate(target)  # an impossible chain fails here, before any training or conversion
    if epochs is not None and int(epochs) < 1:
        raise KstructError(f"Expected `epochs` >= 1. Received: epochs={epochs}")
    if not model.compiled and loss is None:
        raise KstructError(
            f"Model `{model.name}` is not compiled and no `loss` was given. Compile it first "
            "(model.compile(optimizer=..., loss=...)) or pass loss=... (CLI: --loss)."
        )
    if output_dir is not None:
        from kstruct.outputs import check_can_write

        check_can_write(output_dir, overwrite=overwrite, flag="overwrite=True (CLI: --overwrite)")

    train = TrainingData(train_data, batch_size=batch_size)
    train.check_fits(model)
    validation_note = "validation_data"
    if validation_data is not None:
        validation = TrainingData(validation_data, batch_size=batch_size, what="validation_data")
        validation.check_fits(model)
    elif train.is_arrays:
        train, validation = split_validation(train)
        validation_note = "last 10% of train_data (no validation_data given)"
    else:
        validation = train
        validation_note = "train_data (no validation_data given)"

    context = StepContext(
        train=train,
        validation=validation,
        epochs=int(epochs or DEFAULT_EPOCHS),
        target=target,
        compile_source=model if model.compiled and loss is None else None,
        loss=loss,
        optimizer=optimizer or "adam",
        metrics=metrics,
        verbose=verbose,
    )
    x_val, y_val = validation.arrays()
    representative = context.representative_inputs()
    report = Report(
        strategy=str(plan),
        target=target,
        settings={
            "epochs": context.epochs,
            "batch_size": batch_size,
            "steps_per_epoch": train.steps_per_epoch(),
            "validation": validation_note,
            "validation_images": int(len(x_val)),
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
        },
    )

    def convert(current: keras.Model) -> bytes:
        return tflite_export.convert(current, target, representative_data=representative)

    current, blob = model, convert(model)
    report.stages.append(measure_stage("original", model, blob, x_val, y_val))
    _say(report.stages[-1].summary_line(target), verbose)
    for step in plan:
        started = time.perf_counter()
        outcome = step.apply(current, context)
        current = outcome.model
        blob = outcome.tflite if outcome.tflite is not None else convert(current)
        seconds = time.perf_counter() - started
        report.stages.append(
            measure_stage(str(step), current, blob, x_val, y_val, seconds=seconds, notes=outcome.notes)
        )
        _say(report.stages[-1].summary_line(target), verbose)

    if target == "gpu":  # run the file on LiteRT's GPU accelerator; "no_device" records why it did not
        report.stages[-1].notes["gpu_run"] = tflite_export.run_on_gpu(blob).to_dict()
        _say(f"kstruct: gpu run check: {report.stages[-1].notes['gpu_run']['message']}", verbose)
    result = OptimizationResult(model=current, tflite=blob, report=report)
    if output_dir is not None:
        result.save(output_dir, overwrite=overwrite)
    return result
