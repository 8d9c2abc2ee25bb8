"""Training on several devices: `optimize(..., distribution=...)` takes a `tf.distribute.Strategy`
(TensorFlow backend) or a `keras.distribution.Distribution` (JAX backend); here it is checked
against the backend, entered as a scope around the steps, and its replicas counted for the report.

Which kind fits which backend is Keras's rule: Keras 3 trains under a tf.distribute strategy only on
TensorFlow, and its `keras.distribution` API runs on JAX (the TensorFlow one is a prototype Keras marks
"do not use", and PyTorch has none). Neither module is imported here unless it is already loaded: an
object cannot be a TensorFlow strategy unless TensorFlow is loaded.

Across several machines (a MultiWorkerMirroredStrategy over a cluster), every worker runs the same
call and gets the same result; `is_chief` says which one writes the outputs.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import keras
import numpy as np

from kstruct.errors import DistributionError

_FITS = {"tensorflow": "a tf.distribute.Strategy", "jax": "a keras.distribution.Distribution"}


def _is_tf_strategy(value: Any) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, tf.distribute.Strategy)


def _is_keras_distribution(value: Any) -> bool:
    # Keras exports DataParallel and ModelParallel but not their base class: a user's own subclass
    # is recognised by the methods Keras's trainers call on it.
    return all(callable(getattr(value, name, None)) for name in ("get_data_layout", "get_variable_layout", "scope"))


def _kind(value: Any) -> str:
    if _is_tf_strategy(value):
        return "a tf.distribute.Strategy"
    if _is_keras_distribution(value):
        return "a keras.distribution.Distribution"
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def check_distribution(distribution: Any) -> None:
    """Raises DistributionError, in one line naming both, unless `distribution` is None or the kind
    the current backend trains under."""
    if distribution is None:
        return
    backend = keras.backend.backend()
    expected = _FITS.get(backend)
    fits = (backend == "tensorflow" and _is_tf_strategy(distribution)) or (
        backend == "jax" and _is_keras_distribution(distribution)
    )
    if fits:
        active = _active_tf_strategy()
        if active is not None and active is not distribution:
            raise DistributionError(
                f"`distribution` ({type(distribution).__name__}) is not the tf.distribute strategy whose scope "
                f"optimize was called in ({type(active).__name__}): pass it, or call optimize outside that scope."
            )
        return
    if expected is None:
        raise DistributionError(
            f"The {backend} backend takes no `distribution` (a tf.distribute.Strategy needs the tensorflow "
            f"backend, a keras.distribution.Distribution the jax backend). Received: "
            f"distribution={type(distribution).__name__} ({_kind(distribution)})"
        )
    raise DistributionError(
        f"Expected `distribution` to be {expected} on the {backend} backend. Received: "
        f"distribution={type(distribution).__name__} ({_kind(distribution)})"
    )


def _active_tf_strategy() -> Any:
    """The tf.distribute strategy whose scope the caller is in (`with strategy.scope(): optimize(...)`), or None."""
    tf = sys.modules.get("tensorflow")
    if tf is None or keras.backend.backend() != "tensorflow" or not tf.distribute.has_strategy():
        return None
    return tf.distribute.get_strategy()


def _distribution_in_force() -> bool:
    """Whether the caller runs in a tf.distribute strategy's scope or under a keras.distribution."""
    return _active_tf_strategy() is not None or keras.distribution.distribution() is not None


def clear_session() -> None:
    """`keras.backend.clear_session()`, except while a distribution is in force, where it does nothing.

    Why: on TensorFlow it resets the default graph, which holds tf.distribute's scope stack, so every
    model built after it was built outside the strategy, and leaving the scope raised "IndexError: pop
    from empty list"; on JAX it forgets the keras.distribution. A search under a distribution keeps
    its trials' Keras state instead (more memory, the models where they belong)."""
    if not _distribution_in_force():
        keras.backend.clear_session()


@contextlib.contextmanager
def session_kept() -> Iterator[None]:
    """Within it, Keras Tuner's own `keras.backend.clear_session()` (before each model it builds) is
    `clear_session` above; outside a distribution, nothing changes."""
    if not _distribution_in_force():
        yield
        return
    original = keras.backend.clear_session
    keras.backend.clear_session = clear_session
    try:
        yield
    finally:
        keras.backend.clear_session = original


@contextlib.contextmanager
def distribution_scope(distribution: Any) -> Iterator[None]:
    """Enters `distribution`'s scope (a checked one, or None: nothing), so that every model a step
    builds creates its variables on the replicas and every fit runs on them."""
    if is_multi_worker(distribution if distribution is not None else _active_tf_strategy()):
        _fix_keras_multi_worker()
    if distribution is None:
        yield
        return
    with distribution.scope():  # tf.distribute's and keras.distribution's both
        yield


def is_multi_worker(distribution: Any) -> bool:
    """Whether `distribution` is a tf.distribute strategy over a cluster of more than one task."""
    resolver = getattr(distribution, "cluster_resolver", None) if _is_tf_strategy(distribution) else None
    if resolver is None or not resolver.task_type:
        return False
    cluster = resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker")) > 1


def check_same_model(model: keras.Model, distribution: Any) -> None:
    """Under a multi-worker strategy, raises DistributionError on every worker unless all of them hold
    the same weights: each worker builds its own model, and a clone made from it keeps its values
    (a variable created in the strategy's scope starts from the chief's values, but kstruct's steps
    copy the weights in after), so workers started from different draws would train, and return,
    different models. One all-reduce of a 20-bit digest d: all equal iff n * sum(d^2) == sum(d)^2."""
    if distribution is None:
        distribution = _active_tf_strategy()
    if not is_multi_worker(distribution):
        return
    import hashlib

    tf = sys.modules["tensorflow"]
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    value = float(int(digest.hexdigest()[:5], 16))

    def total():
        return tf.distribute.get_replica_context().all_reduce("SUM", tf.constant([value, value * value], tf.float64))

    sums = distribution.experimental_local_results(tf.function(lambda: distribution.run(total))())[0].numpy()
    if distribution.num_replicas_in_sync * sums[1] != sums[0] ** 2:
        raise DistributionError(
            f"Model `{model.name}` differs from one worker to another: under a multi-worker strategy every "
            "worker must pass the same model. Build it after the same keras.utils.set_random_seed(...) on "
            "every worker, or load the same .keras file."
        )


def cluster_means(strategy: Any, variables: list) -> list:
    """Each variable's mean over every replica of `strategy`'s cluster, in one all-reduce run on every
    worker (`strategy.reduce` would not do: it takes a mirrored variable's MEAN to be itself)."""
    if not variables:
        return []
    tf = sys.modules["tensorflow"]

    def mean(*values):
        return tf.distribute.get_replica_context().all_reduce("MEAN", [tf.identity(value) for value in values])

    means = tf.function(lambda: strategy.run(mean, args=tuple(variable.value for variable in variables)))()
    return [strategy.experimental_local_results(value)[0] for value in means]


def is_chief(distribution: Any = None) -> bool:
    """Whether this process writes the outputs: True unless `distribution` (or the strategy scope the
    call runs in) is a multi-worker tf.distribute strategy and this task is not its chief. The chief
    is TensorFlow's and Keras's: the "chief" task, or worker 0 when the cluster has no "chief"."""
    if distribution is None:
        distribution = _active_tf_strategy()
    if not is_multi_worker(distribution):
        return True
    resolver = distribution.cluster_resolver
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def _fix_keras_multi_worker() -> None:
    """Mends the two places where Keras 3's TensorFlow trainer fails under a MultiWorkerMirroredStrategy
    with more than one worker (keras-team/keras#20585, Keras 3.15.1 included): every fit, evaluate and
    predict first takes `strategy.reduce("MEAN", batch)` of a whole (x, y) batch to learn its shapes,
    which only a single PerReplica value can be; and a step's logs, scalars, are reduced across the
    workers with `axis=0`. Here the build reads this worker's own batch, and the logs are averaged
    over all replicas with `axis=None`: what Keras does on one machine. Both replacements call Keras's
    own code for every other strategy, and stay in place once made, so the returned model predicts
    and evaluates under the strategy too."""
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "_kstruct_multi_worker", False):
        return
    tf = sys.modules["tensorflow"]
    multi_worker = trainer._collective_all_reduce_multi_worker
    symbolic_build, reduce_per_replica = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or not multi_worker(strategy):
            return symbolic_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        data_batch = keras.tree.map_structure(
            lambda value: strategy.experimental_local_results(value)[0]
            if isinstance(value, tf.distribute.DistributedValues) else value,
            data_batch,
        )
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_logs(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return keras.tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction=reduction)

    reduce_logs._kstruct_multi_worker = True
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_logs


def _mesh_replicas(distribution: Any) -> int:
    """The data-parallel replicas of a keras.distribution.Distribution: its device mesh's size along
    the batch axis (all its devices for DataParallel)."""
    mesh = distribution.device_mesh
    names = list(mesh.axis_names)
    batch = getattr(distribution, "batch_dim_name", None)
    return int(mesh.shape[names.index(batch)]) if batch in names else int(np.size(mesh.devices))


def describe(distribution: Any) -> dict:
    """`{"distribution": its class name or None, "replicas": n}` for the report (n: the data-parallel
    replicas): the explicit one, else the strategy scope or global keras distribution the call runs in."""
    if distribution is None:
        distribution = _active_tf_strategy()
    if distribution is None and keras.backend.backend() == "jax":
        distribution = keras.distribution.distribution()
    if distribution is None:
        return {"distribution": None, "replicas": 1}
    if _is_tf_strategy(distribution):
        replicas = int(distribution.num_replicas_in_sync)
    else:
        replicas = _mesh_replicas(distribution)
    return {"distribution": type(distribution).__name__, "replicas": replicas}
