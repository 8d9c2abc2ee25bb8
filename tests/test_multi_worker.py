"""`optimize(..., distribution=MultiWorkerMirroredStrategy())` on two worker processes (issue 22).

Two processes on 127.0.0.1 form one cluster (each with its own `TF_CONFIG`, on two free ports): this
file run as a script is one worker (`python tests/test_multi_worker.py INDEX PORT,PORT FOLDER`; its
last stdout line is its JSON). Each runs `prune(0.75) + qat` on 256 digits for one epoch with
`output_dir=FOLDER/out`, in FOLDER as its working and temporary folder. Worker 0 is the chief
(the cluster has no "chief" task): it alone writes the outputs; worker 1 writes nothing that stays.
"""

import hashlib
import json
import os
import pathlib
import socket
import sys
import time

import pytest

from tests.console import environment, spawn

# Run by `make test-processes`, beside the JAX tests, where a core is free (Makefile).
pytestmark = pytest.mark.processes

WORKERS = 2
OUTPUTS = {"model.keras", "model.tflite", "report.json", "report.md", "stages.png", "layers.png", "training.png"}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Starts both workers at once; returns ({index: JSON}, {index: folder}). About 20 s of CPU in all."""
    base = tmp_path_factory.mktemp("multi_worker")
    ports = ",".join(map(str, _free_ports(WORKERS)))
    folders = {index: base / f"worker{index}" for index in range(WORKERS)}
    started = {}
    for index, folder in folders.items():
        (folder / "tmp").mkdir(parents=True)
        env = environment(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(folder / "tmp"))
        env.pop("TF_CONFIG", None)  # each worker sets its own
        # A process of its own per worker (a fork of tests/console.py's zygote, TensorFlow imported once).
        started[index] = spawn([__name__, str(index), ports, str(folder)], module=__name__, env=env, cwd=folder)
    deadline = time.monotonic() + 300  # a hang fails the module instead of blocking it
    try:
        for index, process in started.items():
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            (base / f"{index}.out").write_text(out)  # beside its folder
            (base / f"{index}.err").write_text(err)
    finally:
        for process in started.values():  # a worker left waiting on its peer's collective is stopped
            if process.poll() is None:
                process.kill()
                process.wait()
    for index, process in started.items():
        assert process.returncode == 0, f"worker {index}:\n{(base / f'{index}.err').read_text()[-3000:]}"
    return {index: json.loads((base / f"{index}.out").read_text().strip().splitlines()[-1]) for index in folders}, folders


def test_both_workers_train_as_one_cluster_of_two_replicas(cluster):
    results, _ = cluster
    for index, result in results.items():
        assert result["task"] == ["worker", index]
        assert result["distribution"] == "CollectiveAllReduceStrategy"  # the class of MultiWorkerMirroredStrategy
        assert result["replicas"] == WORKERS  # one CPU replica per worker


def test_worker_0_is_the_chief_and_alone_writes_the_outputs(cluster):
    results, folders = cluster
    assert [results[index]["chief"] for index in range(WORKERS)] == [True, False]
    assert {path.name for path in (folders[0] / "out").iterdir()} == OUTPUTS
    assert json.loads((folders[0] / "out" / "report.json").read_text())["settings"]["replicas"] == WORKERS


def test_the_other_worker_leaves_nothing_behind(cluster):
    _, folders = cluster
    left = sorted(str(path.relative_to(folders[1])) for path in folders[1].rglob("*"))
    assert left == ["tmp"]  # its working folder holds only its own, empty, temporary folder


def test_the_chief_leaves_nothing_but_its_outputs(cluster):
    _, folders = cluster
    assert not any((folders[0] / "tmp").iterdir())
    assert sorted(path.name for path in folders[0].iterdir()) == ["out", "tmp"]  # no staging folder left


def test_both_workers_return_the_same_model_and_file(cluster):
    results, folders = cluster
    assert results[0]["weights"] == results[1]["weights"]
    assert results[0]["tflite"] == results[1]["tflite"]
    assert hashlib.sha256((folders[0] / "out" / "model.tflite").read_bytes()).hexdigest() == results[0]["tflite"]
    assert results[0]["history"] == results[1]["history"]  # the logs are the cluster's, not each worker's


def test_sparsity_is_exact_in_every_pruned_kernel(cluster):
    results, _ = cluster
    for result in results.values():
        assert result["pruned_sparsity"] == {"conv": 0.75, "hidden": 0.75, "out": 0.75}
        assert result["final_kernel_sparsity"] == {"conv": 0.75, "hidden": 0.75, "out": 0.75}


def test_the_schedule_counts_global_steps_across_workers(cluster):
    results, _ = cluster
    for result in results.values():
        assert result["steps_per_epoch"] == 8  # 256 rows in global batches of 32: 16 rows per worker a step
        assert result["local_batch"] == 32 // WORKERS
        assert result["pruning_steps"] == {"conv": 8, "hidden": 8, "out": 8}


def test_a_model_that_differs_between_workers_is_refused_on_each(cluster):
    results, _ = cluster
    for result in results.values():
        assert result["refused"].startswith("Model `sequential")
        assert "differs from one worker to another" in result["refused"]


def test_predict_under_the_strategy_gathers_the_rows_in_order(cluster):
    results, _ = cluster
    assert all(result["predict_max_diff"] == 0.0 for result in results.values())


def test_the_int8_file_agrees_with_the_qat_model(cluster):
    results, _ = cluster
    assert all(result["agreement"] >= 0.99 for result in results.values())


@pytest.mark.parametrize(
    "cluster_jobs, task, chief",
    [
        ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),
        ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
        ({"chief": ["a:1"], "worker": ["b:1"]}, ("chief", 0), True),
        ({"chief": ["a:1"], "worker": ["b:1"]}, ("worker", 0), False),  # worker 0 is no chief beside a "chief"
        ({"worker": ["a:1"]}, ("worker", 0), True),
        ({}, (None, None), True),  # MultiWorkerMirroredStrategy() without TF_CONFIG: one machine
    ],
)
def test_the_chief_is_tensorflows(cluster_jobs, task, chief):
    """`is_chief` on a strategy that only poses as a cluster's task (no server is started)."""
    import tensorflow as tf

    from kstruct.engine.distribute import is_chief

    class Posing(tf.distribute.MultiWorkerMirroredStrategy):
        def __init__(self, resolver):  # joins no cluster
            self.resolver = resolver

        cluster_resolver = property(lambda self: self.resolver)

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster_jobs), task_type=task[0], task_id=task[1]
    )
    assert is_chief(Posing(resolver)) is chief
    assert is_chief(tf.distribute.OneDeviceStrategy("/cpu:0")) and is_chief(None)


def _worker(index: int, ports: list[str], folder: pathlib.Path) -> dict:
    """One worker: prune(0.75) + qat through `distribution=MultiWorkerMirroredStrategy()`, writing to folder/out."""
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    )
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
    )
    import keras
    import numpy as np

    import kstruct
    import kstruct.pruning.step as prune_step
    from kstruct.data import load_mnist_5k
    from kstruct.engine.distribute import is_chief
    from kstruct.errors import DistributionError
    from kstruct.pruning.prune import sparsity, wrappers

    (x, y), (x_val, y_val) = load_mnist_5k()
    x, y, x_val, y_val = x[:256], y[:256], x_val[:128], y_val[:128]
    pruning_steps, strip = {}, prune_step.strip

    def strip_and_record(model, **kwargs):  # the pruning step counters, just before strip drops them
        for wrapper in wrappers(model):
            pruning_steps[wrapper.layer.name] = int(keras.ops.convert_to_numpy(wrapper.pruning_step))
        return strip(model, **kwargs)

    prune_step.strip = strip_and_record

    def build(seed):
        keras.utils.set_random_seed(seed)
        from tests.bn_cnn import bn_cnn
        model = bn_cnn()  # BatchNormalization: moving statistics from each worker's own batches
        return model

    def optimize(model):
        return kstruct.optimize(
            model, "prune(0.75) + qat", train_data=(x, y), validation_data=(x_val, y_val), epochs=1, batch_size=32,
            target="int8", output_dir=folder / "out", distribution=strategy, verbose=0,
        )

    try:  # a different draw on each worker: refused on both, before any work
        optimize(build(seed=index))
        refused = None
    except DistributionError as error:
        refused = str(error)
    result = optimize(build(seed=0))
    # The batch this worker's replica trains on: Keras's fit distributes array data this way.
    batches = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(x[:64]).batch(32))
    local_batch = int(strategy.experimental_local_results(next(iter(batches)))[0].shape[0])
    weights = {variable.path: hashlib.sha256(np.ascontiguousarray(variable.numpy()).tobytes()).hexdigest()[:16]
               for variable in result.model.weights}
    report = result.report
    resolver = strategy.cluster_resolver
    # Keras's predict under the strategy shards the rows across the workers and gathers them: in order?
    gathered, local = result.model.predict(x_val, verbose=0), keras.ops.convert_to_numpy(result.model(x_val))
    return {
        "task": [resolver.task_type, resolver.task_id],
        "chief": is_chief(strategy),
        "distribution": report.settings["distribution"],
        "replicas": report.settings["replicas"],
        "steps_per_epoch": report.settings["steps_per_epoch"],
        "local_batch": local_batch,
        "weights": weights,
        "tflite": hashlib.sha256(result.tflite).hexdigest(),
        "history": [stage.notes.get("history") for stage in report.stages[1:]],
        "pruned_sparsity": report.stages[1].notes["pruned_layers"],
        "final_kernel_sparsity": sparsity(result.model).as_dict()["layers"],
        "pruning_steps": pruning_steps,
        "agreement": report.stages[-1].agreement,
        "refused": refused,
        "predict_max_diff": float(np.max(np.abs(gathered - local))) if gathered.shape == local.shape else None,
    }


if __name__ == "__main__":
    # Run as a script, this folder comes first on sys.path, and tests/tflite_export would hide the package.
    sys.path[:] = [entry for entry in sys.path if pathlib.Path(entry or ".").resolve() != pathlib.Path(__file__).parent]
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    print(json.dumps(_worker(int(sys.argv[1]), sys.argv[2].split(","), pathlib.Path(sys.argv[3]))))
