"""`optimize(..., distribution=...)` and the per-step state under tf.distribute (issue 22).

The two-replica run needs two logical CPU devices, which TensorFlow sets only before it first
lists its devices, so it runs in one subprocess: this file run as a script (`python
tests/test_distribute.py` prints its JSON). The checks of the argument itself run in-process.
"""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "kstruct"


def test_every_weight_kstruct_creates_names_its_aggregation():
    """A counter left to the default could advance once per replica; each `add_weight` says how it aggregates."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_weight":
                if "aggregation" not in {keyword.arg for keyword in node.keywords}:
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not missing, f"add_weight without aggregation=: {missing}"


def _model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _data():
    import numpy as np

    return np.zeros((8, 4), "float32"), np.zeros((8,), "int32")


@pytest.mark.parametrize(
    "distribution, words",
    [
        ("mirrored", "Received: distribution=str (a builtins.str)"),
        (4, "Received: distribution=int (a builtins.int)"),
    ],
)
def test_optimize_refuses_what_is_not_a_distribution_in_one_line(distribution, words):
    import kstruct
    from kstruct.errors import DistributionError

    with pytest.raises(DistributionError) as error:
        kstruct.optimize(_model(), "prune(0.5)", train_data=_data(), distribution=distribution, verbose=0)
    message = str(error.value)
    assert "\n" not in message
    assert "Expected `distribution` to be a tf.distribute.Strategy on the tensorflow backend" in message
    assert words in message


def test_optimize_refuses_a_keras_distribution_on_tensorflow_naming_both():
    import keras

    import kstruct
    from kstruct.errors import DistributionError

    # Uninitialized: only its type is read, and building one on TensorFlow would start DTensor.
    data_parallel = object.__new__(keras.distribution.DataParallel)
    with pytest.raises(DistributionError, match=r"^Expected `distribution` to be a tf\.distribute\.Strategy on the "
                       r"tensorflow backend\. Received: distribution=DataParallel \(a keras\.distribution\.Distribution\)$"):
        kstruct.optimize(_model(), "prune(0.5)", train_data=_data(), distribution=data_parallel, verbose=0)


def test_optimize_refuses_a_strategy_other_than_the_scope_it_runs_in():
    import tensorflow as tf

    import kstruct
    from kstruct.errors import DistributionError

    outer, inner = tf.distribute.OneDeviceStrategy("/cpu:0"), tf.distribute.OneDeviceStrategy("/cpu:0")
    with outer.scope():
        model = _model()
        with pytest.raises(DistributionError, match="is not the tf.distribute strategy whose scope"):
            kstruct.optimize(model, "prune(0.5)", train_data=_data(), distribution=inner, verbose=0)


@pytest.fixture(scope="module")
def two_replicas():
    """The JSON the script below prints, run once for the module (a few seconds of CPU)."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_prune_and_qat_under_mirrored_strategy_train_on_two_replicas(two_replicas):
    assert two_replicas["replicas"] == 2
    assert two_replicas["distribution"] == "MirroredStrategy"
    assert two_replicas["variables_mirrored"]  # the steps built their models in the strategy's scope


def test_the_report_counts_the_replicas_of_the_scope_optimize_is_called_in(two_replicas):
    assert two_replicas["in_scope"] == {"distribution": "MirroredStrategy", "replicas": 2}


def test_pruning_masks_are_identical_on_every_replica(two_replicas):
    pruned = two_replicas["pruned"]
    assert set(pruned) == {"conv", "hidden", "out"}
    assert all(layer["masks_identical"] for layer in pruned.values())


def test_pruning_step_counter_advances_once_per_global_step(two_replicas):
    steps = two_replicas["global_steps"]
    assert steps == 2 * 8  # 2 epochs of 256 rows in global batches of 32
    assert all(layer["pruning_step"] == [steps, steps] for layer in two_replicas["pruned"].values())


def test_sparsity_is_exact_after_prune_and_qat(two_replicas):
    assert two_replicas["pruned_sparsity"] == {"conv": 0.75, "hidden": 0.75, "out": 0.75}
    assert two_replicas["final_sparsity"] == pytest.approx(0.75, abs=1e-9)


def test_quantizer_ranges_are_the_same_on_every_replica(two_replicas):
    assert two_replicas["ranges"] > 0
    assert two_replicas["ranges_identical"]


def test_int8_file_agrees_with_the_qat_model(two_replicas):
    assert two_replicas["agreement"] >= 0.99


def _run_two_replicas() -> dict:
    """prune(0.75) + qat on a tiny CNN under MirroredStrategy over two logical CPUs, through `distribution=`."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    import kstruct
    import kstruct.pruning.step as prune_step
    from kstruct.data import load_mnist_5k

    (x, y), (x_val, y_val) = load_mnist_5k()
    x, y, x_val, y_val = x[:256], y[:256], x_val[:128], y_val[:128]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def copies(variable) -> list:
        value = variable.value
        return [np.asarray(v) for v in getattr(value, "values", (value,))]

    pruned, strip = {}, prune_step.strip

    def strip_and_record(model, **kwargs):  # the wrappers' state on each replica, just before strip drops it
        from kstruct.pruning.prune import wrappers

        for wrapper in wrappers(model):
            masks = copies(wrapper.mask)
            pruned[wrapper.layer.name] = {
                "masks_identical": len(masks) == 2 and all(np.array_equal(masks[0], m) for m in masks[1:]),
                "pruning_step": [int(v) for v in copies(wrapper.pruning_step)],
            }
        return strip(model, **kwargs)

    prune_step.strip = strip_and_record
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    result = kstruct.optimize(
        model, "prune(0.75) + qat", train_data=(x, y), validation_data=(x_val, y_val), epochs=2, batch_size=32,
        distribution=strategy, verbose=0,
    )
    ranges = [v for v in result.model.variables if v.path.endswith(("min_value", "max_value"))]
    report = result.report
    from kstruct.engine.distribute import describe

    with strategy.scope():  # `with strategy.scope(): optimize(...)`, the pattern without the argument
        in_scope = describe(None)
    return {
        "in_scope": in_scope,
        "distribution": report.settings["distribution"],
        "replicas": report.settings["replicas"],
        "variables_mirrored": all(len(copies(v)) == 2 for v in result.model.variables),
        "global_steps": report.settings["steps_per_epoch"] * report.settings["epochs"],
        "pruned": pruned,
        "pruned_sparsity": report.stages[1].notes["pruned_layers"],
        "final_sparsity": report.stages[-1].sparsity,
        "ranges": len(ranges),
        "ranges_identical": all(np.array_equal(*copies(v)) for v in ranges),
        "agreement": report.stages[-1].agreement,
    }


if __name__ == "__main__":
    # Run as a script, this folder comes first on sys.path, and tests/tflite_export would hide the package.
    sys.path[:] = [entry for entry in sys.path if pathlib.Path(entry or ".").resolve() != pathlib.Path(__file__).parent]
    print(json.dumps(_run_two_replicas()))
