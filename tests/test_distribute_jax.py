"""`optimize(..., distribution=keras.distribution.DataParallel())` on JAX, over two host devices (issue 22).

JAX makes its host devices once, when it starts, from `XLA_FLAGS=--xla_force_host_platform_device_count=2`,
and Keras picks its backend once per process: so the run is one subprocess with KERAS_BACKEND=jax, this
file run as a script (`python tests/test_distribute_jax.py` prints its JSON). It sits outside
tests/backends, so the TensorFlow phase of `make test` runs it (about 20 s of CPU, most of it JAX's
and XLA's start and the traces). The model has a DepthwiseConv2D followed by BatchNormalization,
the pair `qat` folds.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

# Run by `make test-processes`, beside the JAX tests, where a core is free (Makefile).
pytestmark = pytest.mark.processes

# XLA's CPU backend at optimization level 0, as `make test-jax`: the tiny model's steps compile faster.
XLA_FLAGS = ("--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0 "
             "--xla_llvm_disable_expensive_passes=true")
LAYERS = ("conv", "dw", "hidden", "out")
STEPS = 8  # 1 epoch of 256 rows in global batches of 32


@pytest.fixture(scope="module")
def data_parallel():
    """The JSON the script below prints, run once for the module."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": XLA_FLAGS}
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_step_trains_data_parallel_on_two_devices(data_parallel):
    assert data_parallel["backend"] == "jax"
    assert data_parallel["distribution"] == "DataParallel"
    assert data_parallel["replicas"] == 2
    assert data_parallel["stage_backends"] == ["jax"] * 3
    # the steps built their models in the distribution's scope: every variable laid out on both devices
    assert data_parallel["variables_on_both_devices"]
    assert data_parallel["wrappers_on_both_devices"]


def test_prune_channels_removes_channels_on_jax(data_parallel):
    before, after = data_parallel["channel_params"]
    assert after < before / 2
    assert data_parallel["widths"] == {"conv": "8->4", "hidden": "16->8"}  # the depthwise follows conv's group
    assert data_parallel["channel_masks_identical"]
    assert data_parallel["channel_steps"] == [STEPS] * len(data_parallel["channel_steps"])


def test_pruning_masks_agree_on_both_devices_and_sparsity_is_exact(data_parallel):
    assert set(data_parallel["masks"]) == set(LAYERS)
    assert all(layer["identical"] and layer["pruning_step"] == STEPS for layer in data_parallel["masks"].values())
    assert data_parallel["pruned_sparsity"] == {name: 0.75 for name in LAYERS}
    assert data_parallel["final_sparsity"] == pytest.approx(0.75, abs=1e-9)


def test_qat_folds_the_depthwise_batchnorm_and_the_int8_file_agrees(data_parallel):
    assert "DepthwiseConv2D" in data_parallel["qat_layers"]
    assert "BatchNormalization" not in data_parallel["qat_layers"]
    assert data_parallel["agreement"] >= 0.99


def _run_data_parallel() -> dict:
    """prune_channels(0.5) + prune(0.75) + qat on a tiny CNN with a depthwise + BatchNorm, DataParallel."""
    import keras
    import numpy as np

    import kstruct
    import kstruct.pruning.channels_step as channels_step
    import kstruct.pruning.step as prune_step
    from kstruct.data import load_mnist_5k
    from kstruct.pruning.channels import channel_wrappers
    from kstruct.pruning.prune import wrappers

    (x, y), (x_val, y_val) = load_mnist_5k()
    x, y, x_val, y_val = x[:256], y[:256], x_val[:128], y_val[:128]

    def copies(variable) -> list:  # the array on each device
        return [np.asarray(shard.data) for shard in variable.value.addressable_shards]

    def identical(variable) -> bool:
        values = copies(variable)
        return len(values) == 2 and all(np.array_equal(values[0], v) for v in values[1:])

    def on_both(layer) -> bool:
        return all(len(v.value.sharding.device_set) == 2 for v in layer.variables)

    seen = {"masks": {}, "channels": [], "wrappers": []}
    strip, strip_channels = prune_step.strip, channels_step.strip_channels

    def strip_and_record(model, **kwargs):
        for wrapper in wrappers(model):
            seen["masks"][wrapper.layer.name] = {
                "identical": identical(wrapper.mask),
                "pruning_step": int(keras.ops.convert_to_numpy(wrapper.pruning_step)),
            }
            seen["wrappers"].append(on_both(wrapper))
        return strip(model, **kwargs)

    def strip_channels_and_record(model):
        for wrapper in channel_wrappers(model):
            seen["channels"].append({
                "identical": all(identical(v) for v in (wrapper.mask, wrapper.channel_rank, wrapper.group_size)),
                "pruning_step": int(keras.ops.convert_to_numpy(wrapper.pruning_step)),
            })
            seen["wrappers"].append(on_both(wrapper))
        return strip_channels(model)

    prune_step.strip, channels_step.strip_channels = strip_and_record, strip_channels_and_record
    keras.utils.set_random_seed(0)
    from tests.bn_cnn import bn_cnn
    model = bn_cnn(depthwise=True, strides=2)
    result = kstruct.optimize(
        model, "prune_channels(0.5) + prune(0.75) + qat", train_data=(x, y), validation_data=(x_val, y_val),
        epochs=1, batch_size=32, distribution=keras.distribution.DataParallel(), verbose=0,
    )
    report = result.report
    return {
        "backend": report.settings["backend"],
        "distribution": report.settings["distribution"],
        "replicas": report.settings["replicas"],
        "stage_backends": [stage.backend for stage in report.stages[1:]],
        "variables_on_both_devices": on_both(result.model),
        "wrappers_on_both_devices": bool(seen["wrappers"]) and all(seen["wrappers"]),
        "channel_params": report.stages[1].notes["params"],
        "widths": report.stages[1].notes["widths"],
        "channel_masks_identical": bool(seen["channels"]) and all(c["identical"] for c in seen["channels"]),
        "channel_steps": [c["pruning_step"] for c in seen["channels"]],
        "masks": seen["masks"],
        "pruned_sparsity": report.stages[2].notes["pruned_layers"],
        "final_sparsity": report.stages[-1].sparsity,
        "qat_layers": sorted({type(getattr(layer, "layer", layer)).__name__ for layer in result.model.layers}),
        "agreement": report.stages[-1].agreement,
    }


if __name__ == "__main__":
    # Run as a script, this folder comes first on sys.path, and tests/tflite_export would hide the package.
    sys.path[:] = [entry for entry in sys.path if pathlib.Path(entry or ".").resolve() != pathlib.Path(__file__).parent]
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for tests.bn_cnn
    print(json.dumps(_run_data_parallel()))
