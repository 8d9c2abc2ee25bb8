"""`kstruct.optimize`: run a strategy's steps on a model, measure every stage, export for a target."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tflite_export

from kstruct.auto.budget import Budget
from kstruct.distillation import distiller
from kstruct.pruning import sparsity

from kstruct.report.layer_stats import compare_layers
from kstruct.engine.distribute import check_distribution, check_same_model, describe, distribution_scope, is_chief
from kstruct.engine.prepare import prepare_data
from kstruct.engine.log import say
from kstruct.errors import KstructError
from kstruct.report.measure import measure_stage
from kstruct._graph import check_graph_model
from kstruct.outputs import write_directory
from kstruct.report import Report
from kstruct.strategy import Strategy, as_strategy
from kstruct.engine.task import detect_tasks
from kstruct.engine.training import (
    DEFAULT_EPOCHS,
    StepContext,
    compile_objects,
    count_argument,
    count_rows,
)


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

    @property
    def strategy(self) -> str:
        """The chain that made this result as a plain strategy string: for `auto`, the chain it
        chose, with its training settings as step options, which `optimize` reproduces."""
        chosen = [str(stage.notes["auto"]["strategy"]) if "auto" in stage.notes else stage.stage
                  for stage in self.report.stages[1:]]
        return " + ".join(part for part in chosen if part)

    @property
    def trials(self) -> list[dict]:
        """`auto`'s trials, one dict per trial (chain, metric, latency, size, feasible, cost); [] otherwise."""
        return [row for stage in self.report.stages for row in stage.notes.get("auto", {}).get("trials", [])]

    def plot(self) -> dict:
        """The report's figures, `{"stages", "layers", "training"}` -> matplotlib `Figure` (Agg)."""
        from kstruct.report.plots import figures

        return figures(self.report)

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes `model.keras`, `model.tflite`, `report.json`, `report.md` and the figures
        (`stages.png`, `layers.png`, `training.png`; `auto.png` with its trial table in
        `report.md` after an `auto` step; `pareto.png` after a `search` step) into `directory`,
        atomically.

        Raises:
            OutputExistsError: if `directory` exists and is not empty, unless `overwrite=True`.
        """

        def fill(folder: Path) -> None:
            self.model.save(folder / "model.keras")
            (folder / "model.tflite").write_bytes(self.tflite)
            (folder / "report.json").write_text(self.report.to_json() + "\n")
            from kstruct.report.plots import auto_table, markdown, save_figures

            pictures = save_figures(self.report, folder)
            trials = auto_table(self.report)
            parts = [self.report.to_markdown(), *([trials] if trials else []), markdown(pictures)]
            (folder / "report.md").write_text("\n\n".join(parts) + "\n")

        return write_directory(directory, fill, overwrite=overwrite)


def _check_target(target: str) -> None:
    if target not in tflite_export.TARGETS:
        raise KstructError(f"Expected `target` to be one of {tuple(tflite_export.TARGETS)}. Received: target={target!r}")


def _check_keras3_compile(model: keras.Model) -> None:
    """Refuses a model compiled from a tf_keras (Keras 2) compile config, before any work.

    Keras 3 loads such a `.keras` file, but the config's `steps_per_execution: null`
    becomes the model's setting, and its first `predict` fails deep inside Keras with
    "'>' not supported between instances of 'NoneType' and 'int'".
    """
    if model.compiled and getattr(model, "steps_per_execution", 1) is None:
        raise KstructError(
            f"Model `{model.name}` was compiled from a tf_keras / Keras 2 compile config (steps_per_execution=None), "
            "with which Keras 3 cannot predict or train. Compile it again in Keras 3 first: "
            "model.compile(optimizer=..., loss=..., metrics=[...])."
        )


def _history_note(histories: list[dict]) -> dict:
    """`{"history": {metric: per-epoch values}}` of a step's fits, joined epoch after epoch."""
    joined: dict[str, list[float]] = {}
    for history in histories:
        for key, values in history.items():
            joined.setdefault(key, []).extend(values)
    return {"history": joined} if joined else {}


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
    steps_per_epoch: int | None = None,
    task: str | dict[str, str] | None = None,
    verbose: int | str = "auto",
    teacher: keras.Model | None = None,
    tensorboard_dir: str | os.PathLike | None = None,
    distribution: Any = None,
) -> OptimizationResult:
    """Runs `strategy` on `model` and exports the result for `target`.

    Every stage (the original model, then each step) is measured the same way:
    Keras and TFLite quality on the validation data as the model's task is judged
    (accuracy for classification, thresholded accuracy for one sigmoid unit, the
    compiled loss and absolute differences for regression; per output), sparsity,
    parameters and non-zero parameters, TFLite bytes and gzipped bytes, one-image
    latency on LiteRT.

    Args:
        model: a Sequential or functional Keras model. It is never modified.
        strategy: `"prune(0.75)"`, `"prune(2:4) + qat"`, a `kstruct.Strategy` or step objects; or
            the budget alone, `"auto(speedup=2, max_accuracy_drop=0.01)"` or `kstruct.Budget(speedup=2)`,
            and `auto` finds the chain (`result.strategy` says which).
        train_data: `(x, y)` or `(x, y, sample_weight)` arrays, a `tf.data.Dataset` or a `keras.utils.PyDataset`
            of such batches (sample weights weigh training, as in `fit`; the report's figures are unweighted).
            `x` and `y` may be lists or dicts of arrays for multi-input or multi-output models.
        validation_data: the same forms. Default: a random 10% of array `train_data`
            (fixed seed) is held out (for finite datasets, the training data is used and
            the report says so; an infinite dataset needs validation_data).
        epochs: epochs per training step (default 2; a step's own `epochs=` wins).
        target: a `tflite_export.TARGETS` name.
        output_dir: if given, `result.save(output_dir, overwrite=overwrite)`. Under a multi-worker
            strategy, on the chief alone (the other workers neither check nor write it, nor
            `tensorboard_dir`); every worker returns the same result.
        loss, optimizer, metrics: how to compile an uncompiled model for training.
        batch_size: batch size for array data.
        steps_per_epoch: batches per epoch; required for an infinite `tf.data` dataset.
        task: "classification", "binary" or "regression" (or a dict by output name)
            when the task cannot be read from the loss and the output activation.
        verbose: Keras's progress bar setting; 0 also silences the stage lines.
        teacher: the model `distill` steps (and `distill=true` training steps) learn
            from. Default: `model` itself, as it was before any step.
        tensorboard_dir: if given, every training step logs loss, metrics and
            sparsity per epoch there (Keras's TensorBoard callback), one run per step.
        distribution: train on several devices: a `tf.distribute.Strategy` (TensorFlow backend,
            e.g. `tf.distribute.MirroredStrategy()`) or a `keras.distribution.Distribution` (JAX
            backend, e.g. `keras.distribution.DataParallel()`). Every step builds and fits its
            models in its scope; `report.settings["replicas"]` says how many replicas trained.
            Default: none, or the `strategy.scope()` optimize is called in.

    Returns:
        An `OptimizationResult`.

    Raises:
        DistributionError: a `distribution` that does not fit the backend.
    """
    plan = _check_arguments(
        model, strategy, target=target, epochs=epochs, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
        loss=loss, teacher=teacher, tensorboard_dir=tensorboard_dir, output_dir=output_dir, overwrite=overwrite,
        distribution=distribution,
    )
    chief = is_chief(distribution)  # of several workers, the chief alone writes outputs and logs
    tasks = detect_tasks(model, task, loss)
    data = prepare_data(
        model, train_data, validation_data, tasks=tasks, batch_size=batch_size, steps_per_epoch=steps_per_epoch
    )
    context = StepContext(
        train=data.train,
        validation=data.validation,
        epochs=int(epochs or DEFAULT_EPOCHS),
        target=target,
        compile_source=model if model.compiled and loss is None else None,
        loss=loss,
        optimizer=optimizer or "adam",
        metrics=metrics,
        verbose=verbose,
        teacher=model if teacher is None else teacher,
        distiller=distiller,
        epoch_scalars={"sparsity": lambda trained: sparsity(trained).overall},
        tensorboard_dir=None if tensorboard_dir is None or not chief else os.fspath(tensorboard_dir),
        custom_objects=compile_objects(getattr(model, "loss", None), loss, metrics),
        tasks=tasks,
    )
    context.check_compile()
    for step in plan:  # a step that cannot work with this many training steps says so before any training
        check = getattr(step, "check_before_training", None)
        if check is not None:
            check(context)
    x_val, y_val = data.validation.arrays()
    report = Report(
        strategy=str(plan),
        target=target,
        settings={
            "epochs": context.epochs,
            "batch_size": batch_size,
            "steps_per_epoch": data.train.steps_per_epoch(),
            "validation": data.validation_note,
            "validation_images": count_rows(x_val, "validation_data"),
            "task": {name: spec.task for name, spec in tasks.items()},
            "metric": {name: spec.metric for name, spec in tasks.items()},
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            **describe(distribution),
        },
    )
    current, blob = _run_steps(model, plan, context, report, (x_val, y_val), distribution)
    if target == "gpu":  # run the file on LiteRT's GPU accelerator; "no_device" records why it did not
        report.stages[-1].notes["gpu_run"] = tflite_export.run_on_gpu(blob).to_dict()
        say(f"kstruct: gpu run check: {report.stages[-1].notes['gpu_run']['message']}", verbose)
    report.layers = compare_layers(model, current)
    result = OptimizationResult(model=current, tflite=blob, report=report)
    if output_dir is not None and chief:
        result.save(output_dir, overwrite=overwrite)
    return result


def _check_arguments(
    model: keras.Model, strategy: Any, *, target: str, epochs: Any, batch_size: Any, steps_per_epoch: Any,
    loss: Any, teacher: keras.Model | None, tensorboard_dir: Any, output_dir: Any, overwrite: bool,
    distribution: Any,
) -> Strategy:
    """Every argument of `optimize` checked before any work; returns the strategy as a checked chain."""
    check_graph_model(model, "kstruct.optimize")
    if isinstance(strategy, Budget):
        from kstruct.auto.step import Auto

        strategy = Auto.from_budget(strategy)
    plan = as_strategy(strategy)
    _check_target(target)
    plan.validate(target)  # an impossible chain fails here, before any training or conversion
    if epochs is not None:
        count_argument("epochs", epochs, KstructError)
    count_argument("batch_size", batch_size)
    if steps_per_epoch is not None:
        count_argument("steps_per_epoch", steps_per_epoch)
    _check_keras3_compile(model)
    check_distribution(distribution)
    check_same_model(model, distribution)  # on every worker, before the checks the chief alone makes
    if not model.compiled and loss is None:
        raise KstructError(
            f"Model `{model.name}` is not compiled and no `loss` was given. Compile it first "
            "(model.compile(optimizer=..., loss=...)) or pass loss=... (CLI: --loss)."
        )
    if teacher is not None:
        from kstruct.distillation import check_teacher

        check_teacher(teacher, model)
    if tensorboard_dir is not None:
        from kstruct.engine.tensorboard import check_tensorboard

        check_tensorboard()
    if output_dir is not None and is_chief(distribution):  # another worker's path is not written
        from kstruct.outputs import check_can_write

        check_can_write(output_dir, overwrite=overwrite)
    return plan


def _run_steps(
    model: keras.Model, plan: Strategy, context: StepContext, report: Report, validation: tuple[Any, Any],
    distribution: Any = None,
) -> tuple[keras.Model, bytes]:
    """Measures the original, then runs and measures each step; returns the last model and its file.

    The original is measured where the user built it; the steps build, fit and are measured in
    `distribution`'s scope (on JAX a model built outside a keras.distribution cannot predict on
    batches sharded by it)."""
    x_val, y_val = validation
    target, tasks, verbose = context.target, context.tasks, context.verbose
    representative = context.representative_inputs()

    def convert(current: keras.Model) -> bytes:
        return tflite_export.convert(current, target, representative_data=representative)

    # The user's own loss and metric objects resolve by name wherever Keras rebuilds a
    # compile config (clone_model, compile_from_config) during the steps.
    with keras.saving.custom_object_scope(context.custom_objects):
        current, blob = model, convert(model)
        report.stages.append(measure_stage("original", model, blob, x_val, y_val, tasks=tasks))
        say(report.stages[-1].summary_line(target), verbose)
        with distribution_scope(distribution):
            for index, step in enumerate(plan, 1):
                started = time.perf_counter()
                context.stage, fits = f"{index}_{step}", len(context.histories)
                outcome = step.apply(current, context)
                current = outcome.model
                blob = outcome.tflite if outcome.tflite is not None else convert(current)
                seconds = time.perf_counter() - started
                notes = {**outcome.notes, **_history_note(context.histories[fits:])}
                stage = measure_stage(str(step), current, blob, x_val, y_val, tasks=tasks, seconds=seconds, notes=notes)
                stage.backend = keras.backend.backend()  # the step trained here; conversion always runs TensorFlow
                report.stages.append(stage)
                say(report.stages[-1].summary_line(target), verbose)
    return current, blob
