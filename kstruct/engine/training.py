"""The user's data in any form `fit` accepts, and the context a step trains in."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import keras
import numpy as np

from kstruct._graph.rebuild import copy_compile
from kstruct.engine.arguments import count_argument
from kstruct.engine.precision import match_loss_scaling, scale_losses_for
from kstruct.engine.settings import TrainingSettings
from kstruct.engine.distribute import cluster_means, is_multi_worker
from kstruct.errors import DataError, KstructError, StrategyError

DEFAULT_EPOCHS = 2


_KINDS = {
    "U": "strings", "S": "byte strings", "O": "Python objects", "c": "complex numbers", "M": "dates", "m": "time spans"
}


def average_replica_copies(model: keras.Model) -> None:
    """After a fit under a tf.distribute strategy: each non-trainable float variable whose copies
    differ across the replicas takes their mean on every replica. Keras's BatchNormalization keeps
    its moving mean and variance per replica (aggregation "none"), each replica averaging its own
    part of the batch; left so, the model predicts differently on each replica, and its weights (the
    .keras and TFLite files, BatchNorm folded by `qat`) are the first replica's alone. Across several
    workers, where this process holds its own replicas' copies only, the mean is the cluster's (one
    all-reduce for them all, run on every worker)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or keras.backend.backend() != "tensorflow" or not tf.distribute.has_strategy():
        return
    strategy = tf.distribute.get_strategy()
    if is_multi_worker(strategy):
        shared = [v for v in model.non_trainable_variables
                  if hasattr(v.value, "values") and keras.backend.is_float_dtype(v.dtype)]
        for variable, mean in zip(shared, cluster_means(strategy, shared)):
            variable.assign(mean)
        return
    for variable in model.non_trainable_variables:
        copies = getattr(variable.value, "values", ())
        if len(copies) < 2 or not keras.backend.is_float_dtype(variable.dtype):
            continue
        arrays = [np.asarray(copy) for copy in copies]
        if any(not np.array_equal(arrays[0], array) for array in arrays[1:]):
            variable.assign(np.mean(arrays, axis=0))


def build_training_state(trainer: keras.Model, x: Any, y: Any) -> None:
    """Creates the optimizer's, metrics' and loss trackers' variables before `fit` traces its train step,
    from the shapes of the first rows of `x` and `y` (the training data, or any part of it).

    Why: on TensorFlow, outside a distribution strategy, Keras creates them during the first
    trace of the train step, and a `tf.function` that creates variables is traced a second
    time: every fit paid for two traces (one epoch of 8 batches: 0.75 s of CPU against 0.43 s
    for the example CNN, 15.3 s against 8.9 s for MobileNetV2; benchmarks/keras_overheads.py).
    Keras builds them first itself under a strategy and on JAX and PyTorch (its
    `_symbolic_build`, from the shapes of one batch); this makes the same call. Where a
    Keras version lacks it, fit traces twice, as before.
    """
    if keras.backend.backend() != "tensorflow" or getattr(trainer, "_distribute_strategy", None) is not None:
        return  # other backends, and Keras under a strategy, build first already
    symbolic_build = getattr(trainer, "_symbolic_build", None)
    if symbolic_build is not None:
        symbolic_build(data_batch=(take(x, slice(None, 32)), take(y, slice(None, 32)), None))


def spec_rows(dataset) -> tuple[Any, Any] | None:
    """One row of zeros for `x` and for `y`, shaped and typed as a tf.data dataset's `(x, y[, w])` batches
    (unknown dims 1): what `build_training_state` needs, read from the dataset's `element_spec` rather
    than from its first batch, which could cost a shuffle buffer's worth of reading. None when an
    element is not `(x, y, ...)` of dense numeric tensors (ragged, sparse, strings)."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        return None
    leaves = keras.tree.flatten(spec[:2])
    if not leaves or not all(isinstance(leaf, tf.TensorSpec) and (leaf.dtype.is_floating or leaf.dtype.is_integer
                                                                    or leaf.dtype.is_bool) for leaf in leaves):
        return None

    def zeros(leaf):
        return np.zeros([1 if d is None else d for d in leaf.shape], leaf.dtype.as_numpy_dtype)

    return keras.tree.map_structure(zeros, spec[0]), keras.tree.map_structure(zeros, spec[1])


def check_label_dtype(y: Any, what: str) -> None:
    """Raises DataError if any label array is not numeric (strings, Python objects).

    Keras's losses take numbers; string labels otherwise fail deep in numpy
    (UFuncTypeError) or TensorFlow with no word about the labels.
    """
    for name, array in name_arrays(y, "labels"):
        dtype = np.asarray(array).dtype
        if dtype.kind not in "biuf":
            raise DataError(
                f"`{what}` {name} have dtype {dtype} ({_KINDS.get(dtype.kind, 'not numbers')}); Keras trains on "
                "numbers. Pass integer class ids, e.g. classes, y = np.unique(y, return_inverse=True)."
            )


def is_dataset(data) -> bool:
    # tf.data without importing TensorFlow at module import time.
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "element_spec")


def shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def as_arrays(value: Any) -> Any:
    """numpy arrays in the structure `fit` accepts: one array, a list/tuple of arrays, or a dict of them.

    A list of arrays is several inputs (or outputs), as in `fit(x=[x1, x2])`;
    `np.asarray` on it would try to stack inputs of different shapes.
    """
    if isinstance(value, dict):
        return {key: np.asarray(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)) and value and all(hasattr(v, "shape") and len(v.shape) for v in value):
        return [np.asarray(v) for v in value]
    return np.asarray(value)


def _sample_weights(weights: Any, rows: int, what: str) -> np.ndarray:
    """One finite, non-negative float weight per row (what Keras's `fit(sample_weight=...)` takes)."""
    values = np.asarray(weights)
    if values.dtype.kind not in "biuf" or values.shape[:1] != (rows,) or values.ndim > 2:
        raise DataError(
            f"The sample weights of `{what}` must be numbers, one per row ({rows}). Received: an array of shape "
            f"{values.shape} and dtype {values.dtype}"
        )
    values = values.astype("float32")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise DataError(f"The sample weights of `{what}` must be finite and non-negative.")
    return values


def take(structure: Any, index) -> Any:
    """The rows `index` of every array in `structure`."""
    return keras.tree.map_structure(lambda a: a[index], structure)


def count_rows(structure: Any, what: str) -> int:
    """The common number of rows of every array in `structure`.

    Raises:
        DataError: the arrays disagree on the number of rows.
    """
    lengths = [len(a) if np.ndim(a) else 0 for a in keras.tree.flatten(structure)]
    if len(set(lengths)) > 1:
        raise DataError(f"The arrays of `{what}` have different numbers of rows: {lengths}; they must match.")
    return lengths[0] if lengths else 0


def name_arrays(structure: Any, prefix: str) -> list[tuple[str, np.ndarray]]:
    """(`x['image']` / `x[1]` / `x`, array) for every array, to name the one at fault in errors."""
    if not isinstance(structure, (dict, list, tuple)):
        return [(prefix, structure)]
    named = []
    for path, array in keras.tree.flatten_with_path(structure):
        named.append((prefix + "".join(f"[{p!r}]" for p in path), array))
    return named


def _infinite(dataset) -> bool:
    import tensorflow as tf

    return int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY)


SAMPLE_ROWS = 1024  # rows of a dataset read once for every check and the calibration sample
_COUNT_LIMIT = 100_000  # batches counted in a dataset of unknown size before assuming it repeats


@dataclass
class TrainingData:
    """Data for `fit` in one of three forms: `(x, y)` or `(x, y, sample_weight)` arrays, a
    `tf.data.Dataset`, a `keras.utils.PyDataset`.

    `x` and `y` may each be one array, a list of arrays (several inputs or outputs)
    or a dict of arrays keyed by input or output name. Datasets and PyDatasets must
    yield `(x, y)` or `(x, y, sample_weight)` batches; arrays are batched with `batch_size`.
    An infinite dataset needs `steps` (steps per epoch). Sample weights weigh training,
    as in Keras's `fit`; the report's figures are unweighted.
    """

    source: Any
    batch_size: int = 32
    what: str = "train_data"
    steps: int | None = None
    sample_weight: Any = field(default=None, init=False, repr=False)
    _counted: int | None = field(default=None, init=False, repr=False)
    _sample: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.batch_size = count_argument("batch_size", self.batch_size)
        if self.steps is not None:
            self.steps = count_argument("steps_per_epoch", self.steps)
        data = self.source
        if isinstance(data, (tuple, list)) and len(data) in (2, 3):
            x, y = as_arrays(data[0]), as_arrays(data[1])
            rows, labels = count_rows(x, f"{self.what} inputs"), count_rows(y, f"{self.what} labels")
            if rows != labels:
                raise DataError(f"`{self.what}` has {rows} inputs but {labels} labels; they must match.")
            if rows == 0:
                raise DataError(f"`{self.what}` is empty.")
            check_label_dtype(y, self.what)
            if len(data) == 3 and data[2] is not None:
                self.sample_weight = _sample_weights(data[2], rows, self.what)
            self.source = (x, y)
        elif not (is_dataset(data) or isinstance(data, keras.utils.PyDataset)):
            raise DataError(
                f"Expected `{self.what}` as (x, y) or (x, y, sample_weight) arrays, a tf.data.Dataset or a "
                f"keras.utils.PyDataset. Received: "
                + (f"a {type(data).__name__} of {len(data)}" if isinstance(data, (tuple, list)) else
                   f"an object of type {type(data).__name__}")
            )

    def subset(
        self, index, what: str | None = None, *, batch_size: int | None = None, steps: int | None = None
    ) -> "TrainingData":
        """The rows `index` of array data (`slice(None)`: all of them), sample weights included."""
        x, y = self.source
        parts = (take(x, index), take(y, index))
        if self.sample_weight is not None:
            parts += (self.sample_weight[index],)
        return TrainingData(parts, batch_size or self.batch_size, what or self.what, steps=steps)

    def keras_data(self) -> Any:
        """What Keras's `validation_data=` takes: the dataset, `(x, y)`, or `(x, y, sample_weight)`."""
        if self.is_arrays and self.sample_weight is not None:
            return (*self.source, self.sample_weight)
        return self.source

    @property
    def is_arrays(self) -> bool:
        return isinstance(self.source, tuple)

    @property
    def is_infinite(self) -> bool:
        return is_dataset(self.source) and _infinite(self.source)

    def fit_arguments(self) -> dict:
        if self.is_arrays:
            x, y = self.source
            arguments = {"x": x, "y": y, "batch_size": self.batch_size}
            if self.sample_weight is not None:
                arguments["sample_weight"] = self.sample_weight
            return arguments
        arguments = {"x": self.source, "shuffle": False}  # datasets shuffle themselves
        if self.steps is not None:
            arguments["steps_per_epoch"] = int(self.steps)
        return arguments

    def _infinite_message(self) -> str:
        return (
            f"`{self.what}` is an infinite dataset (it repeats forever), so an epoch never ends. Pass "
            "steps_per_epoch=... (how many batches make an epoch) and a finite validation_data=..., "
            "or take a finite part of it with dataset.take(n)."
        )

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch; pruning schedules are derived from it."""
        if self.steps is not None:
            return int(self.steps)
        if self.is_arrays:
            return math.ceil(count_rows(self.source[0], self.what) / self.batch_size)
        if isinstance(self.source, keras.utils.PyDataset):
            return len(self.source)
        cardinality = int(self.source.cardinality())
        if cardinality >= 0:
            return cardinality
        if self.is_infinite:
            raise DataError(self._infinite_message())
        if self._counted is None:
            count = 0
            for _ in self.source:  # unknown cardinality: count once
                count += 1
                if count > _COUNT_LIMIT:
                    raise DataError(
                        f"`{self.what}` yielded more than {_COUNT_LIMIT:,} batches without ending; if it repeats "
                        "forever, pass steps_per_epoch=... and a finite validation_data=..."
                    )
            self._counted = count
        return self._counted

    def arrays(self, limit: int | None = None) -> tuple[Any, Any]:
        """The data as numpy arrays (up to `limit` rows), for evaluation on the TFLite runtime."""
        if self.is_arrays:
            x, y = self.source
            return (take(x, slice(None, limit)), take(y, slice(None, limit))) if limit else (x, y)
        if limit is None and self.is_infinite:
            raise DataError(self._infinite_message())
        xs, ys, count = [], [], 0
        batches = (self.source[i] for i in range(len(self.source))) if isinstance(
            self.source, keras.utils.PyDataset
        ) else self.source
        for batch in batches:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise DataError(f"`{self.what}` must yield (x, y) batches. Received a batch of type {type(batch).__name__}")
            x, y = (keras.tree.map_structure(keras.ops.convert_to_numpy, v) for v in batch[:2])
            xs.append(x)
            ys.append(y)
            count += count_rows(x, self.what)
            if limit and count >= limit:
                break
        if not xs:
            raise DataError(f"`{self.what}` is empty.")
        x, y = (keras.tree.map_structure(lambda *parts: np.concatenate(parts), *v) for v in (xs, ys))
        return (take(x, slice(None, limit)), take(y, slice(None, limit))) if limit else (x, y)

    def sample(self) -> tuple[Any, Any]:
        """`(x, y)` to check and calibrate on: the arrays themselves, or a dataset's first
        `SAMPLE_ROWS` rows, read once and kept (a tf.data pipeline is not read again per check)."""
        if self.is_arrays:
            return self.source
        if self._sample is None:
            self._sample = self.arrays(limit=SAMPLE_ROWS)
        return self._sample

    def sample_inputs(self, count: int, *, seed: int = 0) -> Any:
        """Up to `count` input rows drawn at random (fixed `seed`) from array data, in their original order.

        For int8 calibration: the first rows of data sorted by class or time would
        calibrate on one class or one period. Datasets give their first `count` rows
        (they shuffle themselves).
        """
        if not self.is_arrays:
            return take(self.sample()[0], slice(None, count)) if count <= SAMPLE_ROWS else self.arrays(limit=count)[0]
        x = self.source[0]
        rows = count_rows(x, self.what)
        return take(x, np.sort(np.random.default_rng(seed).choice(rows, size=min(count, rows), replace=False)))

    def check_fits(self, model: keras.Model) -> None:
        """Raises DataError unless the inputs match the model's inputs in number, names and shapes."""
        x, _ = self.sample()
        for tensor, array, label in pair_inputs(model, x, self.what):
            expected = tuple(tensor.shape)
            got = tuple(array.shape)
            fits = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected[1:], got[1:]))
            if not fits:
                raise DataError(
                    f"`{self.what}` {label} have shape {shape_text((None,) + got[1:])}, "
                    f"but model `{model.name}` expects {shape_text(expected)}. Reshape the data to match."
                )


def model_inputs(model: keras.Model) -> Any:
    """`model.input` (a dict or list for multi-input functional models); Sequential models have one input."""
    try:
        return model.input
    except (AttributeError, ValueError):
        inputs = list(model.inputs)
        return inputs[0] if len(inputs) == 1 else inputs


def pair_inputs(model: keras.Model, x: Any, what: str) -> list[tuple[Any, np.ndarray, str]]:
    """(model input, its array, how to name it) for every input of `model`.

    Raises:
        DataError: `x` gives a different number of inputs, or dict keys that are not the model's input names.
    """
    structure = model_inputs(model)
    if isinstance(structure, dict):
        keyed = [(str(path[-1]), t) for path, t in keras.tree.flatten_with_path(structure)]
    else:
        keyed = [(t.name, t) for t in keras.tree.flatten(structure)]
    if isinstance(x, dict):
        missing = [key for key, _ in keyed if key not in x]
        if missing:
            raise DataError(
                f"`{what}` inputs are a dict with keys {sorted(x)}, but model `{model.name}` has inputs "
                f"named {[key for key, _ in keyed]}. Key the arrays by input name."
            )
        return [(t, x[key], f"inputs[{key!r}]") for key, t in keyed]
    leaves = keras.tree.flatten(x)
    if len(keyed) == 1 and len(leaves) > 1 and isinstance(x, (list, tuple)):
        raise DataError(
            f"Model `{model.name}` has 1 input, but `{what}` x is a list of {len(leaves)} arrays, which Keras "
            f"reads as {len(leaves)} separate inputs. Pass x as one array, e.g. np.stack(x)."
        )
    if len(leaves) != len(keyed):
        raise DataError(
            f"Model `{model.name}` has {len(keyed)} input(s) {[key for key, _ in keyed]}, but `{what}` gives "
            f"{len(leaves)} input array(s). Pass x as a list in that order, or a dict keyed by input name."
        )
    if len(keyed) == 1:
        return [(keyed[0][1], leaves[0], "inputs")]
    return [(t, array, f"inputs[{key!r}]") for (key, t), array in zip(keyed, leaves)]


def check_input_count(model: keras.Model, data: Any, what: str) -> None:
    """Raises DataError if `(x, y)` array data gives a different number of inputs than `model` has.

    Run before `TrainingData`, whose row count would otherwise report a list of 64
    samples as "28 inputs but 64 labels" (the rows of each of 64 "inputs").
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (list, tuple, dict)):
        pair_inputs(model, as_arrays(data[0]), what)


def split_validation(data: TrainingData, fraction: float = 0.1, seed: int = 0) -> tuple[TrainingData, TrainingData]:
    """Holds out a random `fraction` of array data (fixed `seed`) for validation when the user gave none.

    Random, not the last rows: data sorted by class or time would otherwise hold out one class or one period.
    """
    x, y = data.source
    rows = count_rows(x, data.what)
    if rows < 2:
        raise DataError(
            f"`{data.what}` has {rows} sample: too few to hold out validation data ({fraction:.0%}) and train on "
            "the rest. Pass validation_data=... (CLI: x_val and y_val in the .npz), or more samples."
        )
    n_val = max(1, int(rows * fraction))
    order = np.random.default_rng(seed).permutation(rows)
    held, kept = np.sort(order[:n_val]), np.sort(order[n_val:])
    return data.subset(kept), data.subset(held, "validation (held out of train_data)")


def validation_split(
    train: TrainingData, validation_data: Any = None, *, batch_size: int = 32
) -> tuple[TrainingData, TrainingData, str]:
    """`(train, validation, where validation came from)`: the one rule for every door (optimize, search).

    Given validation data is used as given. Without it, array training data gives up a random
    10% (`split_validation`); a finite dataset doubles as its own validation data (it cannot be
    split without reading it whole), and the note says so; an infinite one is refused.
    """
    if validation_data is not None:
        validation = (
            validation_data if isinstance(validation_data, TrainingData)
            else TrainingData(validation_data, batch_size=batch_size, what="validation_data")
        )
        note = "validation_data"
    elif train.is_arrays:
        train, validation = split_validation(train)
        note = "random 10% of train_data, seed 0 (no validation_data given)"
    elif train.is_infinite:
        raise DataError(
            "`train_data` is an infinite dataset, so it cannot double as validation data. Pass a finite "
            "validation_data=... (and steps_per_epoch=...)."
        )
    else:
        validation, note = train, "train_data (no validation_data given)"
    if validation.is_infinite:
        raise DataError("`validation_data` is an infinite dataset; pass a finite one, e.g. dataset.take(n).")
    return train, validation, note


@dataclass
class StepContext:
    """What a step needs to train and measure: data, epochs, target and how to compile.

    Attributes:
        train: training data.
        validation: validation data (held out of `train` when the user gave none).
        epochs: epochs per training step unless the step sets its own.
        target: the TFLite target name the strategy exports to.
        compile_source: the user's compiled model, whose loss/optimizer/metrics new
            models copy; None when `loss` is given instead.
        loss, optimizer, metrics: used when the user's model was not compiled.
        verbose: Keras progress bar setting for `fit`.
        teacher: the model steps distill from (the one given to `optimize`, or its `teacher=`).
        distiller: how a student is wrapped to learn from the teacher, `(teacher, student,
            **settings) -> a model to fit`; `optimize` passes `kstruct.distillation.distiller`
            (the engine never imports a technique).
        epoch_scalars: name -> function of the model, logged at each epoch's end beside the
            loss (History, TensorBoard); `optimize` passes the pruning sparsity.
        tensorboard_dir: if set, every `fit` logs there (one run folder per stage).
        stage: the name of the step now running (the TensorBoard run folder).
        histories: `History.history` of every `fit` so far, in order, for the report.
        custom_objects: the user's loss and metric objects by the name their
            compile config gives them (see `compile_objects`).
        settings: the running step's own optimizer, learning rate, schedule and batch
            size (see `for_step`); unset ones follow the user's model.
        tasks: the model's task per output (`kstruct.engine.task.detect_tasks`), for
            steps that judge quality themselves (`auto`).
    """

    train: TrainingData
    validation: TrainingData
    epochs: int = DEFAULT_EPOCHS
    target: str = "int8"
    compile_source: keras.Model | None = None
    loss: Any = None
    optimizer: Any = "adam"
    metrics: Any = None
    verbose: int | str = "auto"
    teacher: keras.Model | None = None
    distiller: Callable[..., keras.Model] | None = None
    epoch_scalars: dict[str, Callable[[keras.Model], float]] = field(default_factory=dict)
    tensorboard_dir: str | None = None
    stage: str = "step"
    histories: list[dict[str, list[float]]] = field(default_factory=list)
    custom_objects: dict[str, Any] = field(default_factory=dict)
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    tasks: dict[str, Any] = field(default_factory=dict)

    def for_step(self, epochs: int | None = None, settings: TrainingSettings | None = None) -> "StepContext":
        """This context as one training step sees it: its own epochs and training settings.

        The copy shares `histories`, so the report still gets every fit. A `batch_size`
        rebatches array data; a dataset brings its own batches, so it is refused there.
        """
        settings = settings or TrainingSettings()
        train = self.train
        if settings.batch_size is not None and settings.batch_size != train.batch_size:
            if not train.is_arrays:
                raise StrategyError(
                    f"`batch_size={settings.batch_size}` needs (x, y) array training data; a dataset brings its own "
                    "batches. Batch the dataset itself, or drop batch_size from the step."
                )
            train = train.subset(slice(None), batch_size=settings.batch_size, steps=train.steps)
        return dataclasses.replace(self, epochs=epochs or self.epochs, settings=settings, train=train)

    def steps(self, epochs: int | None = None) -> int:
        """Optimizer steps in `epochs` (default: the context's epochs)."""
        return (epochs or self.epochs) * self.train.steps_per_epoch()

    def compile(self, model: keras.Model) -> keras.Model:
        """Compiles `model` like the user's model (fresh optimizer state, same loss and metrics); returns it.

        The compile config is loaded back with the user's own loss and metric objects in
        scope, so plain Python functions keep working and no metric is dropped.

        Raises:
            KstructError: the config names a loss or metric kstruct cannot find.
        """
        match_loss_scaling(model)  # a mixed_float16 model trains with loss scaling, as the user's did
        if self.compile_source is not None and self.compile_source.compiled:
            source = self.compile_source.get_compile_config().get("optimizer")
            with self._loading_compile_config():
                copy_compile(
                    self.compile_source, model, optimizer=self.settings.optimizer_config(source, self.steps), strict=True
                )
        else:
            source = keras.optimizers.serialize(keras.optimizers.get(self.optimizer))
            optimizer = keras.optimizers.deserialize(self.settings.optimizer_config(source, self.steps))
            model.compile(optimizer=optimizer, loss=self.loss, metrics=self.metrics or ["accuracy"])
        return model

    def check_compile(self) -> None:
        """Raises KstructError now, before any training, if the user's compile config cannot be loaded back."""
        if self.compile_source is not None and self.compile_source.compiled:
            with self._loading_compile_config():
                keras.saving.deserialize_keras_object(self.compile_source.get_compile_config())

    @contextlib.contextmanager
    def _loading_compile_config(self) -> Iterator[None]:
        try:
            with keras.saving.custom_object_scope(self.custom_objects):
                yield
        except (TypeError, ValueError) as error:
            raise KstructError(
                f"kstruct compiles each new model as model `{self.compile_source.name}` was compiled, but its "
                f"compile config does not load back: {str(error).split('. ')[0].rstrip('.')}. Decorate the custom loss or "
                "metric with @keras.saving.register_keras_serializable(), or pass it to optimize "
                "(metrics=[...], loss=...)."
            ) from None

    def fit(
        self,
        model: keras.Model,
        epochs: int | None = None,
        callbacks=None,
        *,
        distill: bool = False,
        temperature: float | None = None,
        alpha: float | None = None,
    ) -> keras.callbacks.History:
        """Compiles and trains `model` on the training data, with Keras's own progress bar.

        With `distill=True` the model learns from the context's teacher as well as the
        labels (a `keras.distillation.Distiller` around it), so any training step gets
        distillation by passing the flag. The History is kept for the report.
        """
        self.compile(model)
        trainer = model
        if distill:
            if self.teacher is None or self.distiller is None:
                raise KstructError(
                    "Distillation needs a teacher and a distiller; `optimize` sets both (its `teacher=` argument)."
                )
            settings = {key: value for key, value in (("temperature", temperature), ("alpha", alpha)) if value is not None}
            trainer = self.distiller(self.teacher, model, sample=take(self.train.sample()[0], slice(None, 16)), **settings)
            scale_losses_for(trainer, model)
        from kstruct.engine.tensorboard import epoch_callbacks

        build_training_state(trainer, *self.train.sample())
        history = trainer.fit(
            **self.train.fit_arguments(),
            epochs=epochs or self.epochs,
            callbacks=[*(callbacks or []), *epoch_callbacks(model, self.tensorboard_dir, self.stage, self.epoch_scalars)],
            verbose=self.verbose,
        )
        average_replica_copies(model)
        self.histories.append({key: [float(v) for v in values] for key, values in history.history.items()})
        return history

    def representative_inputs(self, count: int = 200, seed: int = 0) -> Any:
        """Training inputs for int8 calibration (see `TrainingData.sample_inputs`)."""
        return self.train.sample_inputs(count, seed=seed)


def compile_objects(*sources: Any) -> dict[str, Any]:
    """The functions and objects in losses or metrics, by the name a compile config gives them.

    `Model.get_compile_config` names a plain Python loss by its `__name__` and an
    unregistered class by its class name; with these in a `custom_object_scope`, the
    config loads back with the user's objects.
    """
    found: dict[str, Any] = {}
    for source in sources:
        for item in keras.tree.flatten(source) if source is not None else []:
            if isinstance(item, str) or item is None:
                continue
            if callable(item) and hasattr(item, "__name__"):
                found[item.__name__] = item
            elif not isinstance(item, type):
                found[type(item).__name__] = type(item)
    return found
