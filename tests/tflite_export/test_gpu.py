"""run_on_gpu: files RUN on LiteRT's GPU accelerator (a child process), compared with the CPU.

Needs a Vulkan device; without one (no GPU, no lavapipe: `sudo scripts/install-lavapipe.sh`)
the device tests skip and say why, unless KSTRUCT_REQUIRE_GPU_TESTS=1 (CI) makes that a failure.
Every model here is tiny: lavapipe runs shaders on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tflite_export
from tflite_export import CompatibilityError, GpuVerdict, run_on_gpu
from tflite_export import gpu as gpu_lib

from tests.console import kstruct


def _static_cnn():
    import keras

    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(), keras.layers.Dense(5)]
    )


def _from_function(fn, shape) -> bytes:
    """A one-op file: `fn` on a static float32 input, through TF's converter."""
    import tensorflow as tf

    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert()


@pytest.fixture(scope="module")
def static_cnn_blob() -> bytes:
    return tflite_export.convert(_static_cnn(), "gpu")


@pytest.fixture(scope="module")
def device(static_cnn_blob) -> GpuVerdict:
    """The verdict on a tiny static CNN; skips (or, in CI, fails) the module's device tests without Vulkan."""
    verdict = run_on_gpu(static_cnn_blob)
    if verdict.status == "no_device":
        reason = f"GPU tests skipped: {verdict.message}"
        if os.environ.get("KSTRUCT_REQUIRE_GPU_TESTS") == "1":
            pytest.fail(f"KSTRUCT_REQUIRE_GPU_TESTS=1 but {reason}")
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    return verdict


def test_static_cnn_runs_fully_accelerated_with_the_cpus_outputs(device):
    assert device.status == "accelerated" and device.ok, device.message
    assert device.fully_accelerated is True
    assert device.max_abs_diff <= 1e-5
    assert device.device  # e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"
    assert device.software == device.device.startswith("llvmpipe")
    assert device.message.startswith("fully accelerated on ")
    assert device.gpu_ms > 0 and device.cpu_ms > 0 and device.load_ms > 0
    assert device.raise_for_failure() is device


@pytest.mark.parametrize("target", ["float32", "gpu", "int8"])
def test_example_cnn_files_pass_the_run_check(device, cnn_blob, target):
    verdict = run_on_gpu(cnn_blob(target))
    assert verdict.status == "accelerated", verdict.message
    # int8 outputs are compared in quantization steps: the GPU gives the same integers.
    assert verdict.max_abs_diff <= (0 if target == "int8" else 1e-5)


def test_topk_over_10_values_is_caught_as_wrong_output(device):
    verdict = run_on_gpu(_from_function(lambda x: __import__("tensorflow").math.top_k(x, k=3).values, [1, 10]))
    assert verdict.status == "wrong_output", verdict.message
    assert verdict.fully_accelerated is True  # what LiteRT claims
    assert verdict.max_abs_diff > 1e-2
    assert "TopK requires src tensor C dimension to be divisible by 4." in verdict.runtime_warnings
    assert "outputs differ from the CPU's" in verdict.message and "TopK requires" in verdict.message
    with pytest.raises(CompatibilityError, match="does not run correctly on LiteRT's GPU accelerator"):
        verdict.raise_for_failure()


def test_topk_over_8_values_is_right(device):
    verdict = run_on_gpu(_from_function(lambda x: __import__("tensorflow").math.top_k(x, k=3).values, [1, 8]))
    assert verdict.status == "accelerated", verdict.message
    assert verdict.max_abs_diff == 0


def test_cumsum_crash_is_a_verdict_and_this_process_lives_on(device):
    verdict = run_on_gpu(_from_function(lambda x: __import__("tensorflow").math.cumsum(x, axis=-1), [1, 4, 4, 8]))
    assert verdict.status == "crashed", verdict.message
    assert verdict.signal == "SIGILL" and verdict.stage == "gpu_compile"
    assert verdict.message.startswith("the GPU runner was killed by SIGILL at stage 'gpu_compile'")


def test_dynamic_batch_flatten_is_refused_naming_the_shape_op(device):
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(), keras.layers.Dense(3)])
    blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()  # batch left dynamic
    verdict = run_on_gpu(blob)
    assert verdict.status == "not_accelerated", verdict.message
    assert "SHAPE" in verdict.unsupported_ops
    assert "dynamic-sized tensors" in verdict.message and "Failed to modify graph with delegate" in verdict.message


def test_log_softmax_is_refused_naming_the_op(device):
    verdict = run_on_gpu(_from_function(lambda x: __import__("tensorflow").nn.log_softmax(x), [1, 8]))
    assert verdict.status == "not_accelerated", verdict.message
    assert verdict.unsupported_ops == ["LOG_SOFTMAX"]
    assert "LOG_SOFTMAX (Operation is not supported)" in verdict.message
    with pytest.raises(CompatibilityError) as info:
        verdict.raise_for_failure()
    assert info.value.ops == ("LOG_SOFTMAX",) and info.value.target == "gpu"


def test_partial_delegate_runs_and_says_which_op_stayed_on_the_cpu(device):
    import tensorflow as tf

    blob = _from_function(lambda x: tf.nn.log_softmax(tf.nn.relu(x) * 2.0), [1, 8])
    verdict = run_on_gpu(blob, allow_cpu_fallback=True)
    assert verdict.status == "not_accelerated" and verdict.fully_accelerated is False, verdict.message
    assert verdict.unsupported_ops == ["LOG_SOFTMAX"]
    assert verdict.message.startswith("partly on the CPU")


def test_no_vulkan_device_is_a_verdict_not_an_error(static_cnn_blob, monkeypatch, tmp_path):
    monkeypatch.setenv("VK_DRIVER_FILES", str(tmp_path / "no_such_icd.json"))
    verdict = run_on_gpu(static_cnn_blob)
    assert verdict.status == "no_device" and not verdict.ran, verdict.message
    assert verdict.message.startswith("no Vulkan device: LiteRT's GPU accelerator found no adapter")
    assert "scripts/install-lavapipe.sh" in verdict.message
    assert verdict.raise_for_failure() is verdict  # nothing known: the caller records the message
    with pytest.raises(tflite_export.ExportError, match="^Cannot time the GPU accelerator: no Vulkan device"):
        tflite_export.benchmark(static_cnn_blob, runs=1, warmup=0, accelerator="gpu")


def test_child_gets_lavapipe_only_when_no_driver_is_chosen(monkeypatch):
    chosen = gpu_lib.child_env({"VK_DRIVER_FILES": "/x/nvidia_icd.json"})
    assert chosen["VK_DRIVER_FILES"] == "/x/nvidia_icd.json"
    monkeypatch.setattr(gpu_lib, "LAVAPIPE_ICD", __file__)  # an existing file stands in for the ICD
    monkeypatch.setattr(gpu_lib, "_VENDOR_ICD_DIRS", ())
    assert gpu_lib.child_env({})["VK_DRIVER_FILES"] == __file__
    monkeypatch.setattr(gpu_lib, "LAVAPIPE_ICD", "/nonexistent/lvp_icd.json")
    assert "VK_DRIVER_FILES" not in gpu_lib.child_env({})


@pytest.mark.parametrize("bad, message", [
    ({"runs": 0}, "Expected `runs` to be an int >= 1. Received: runs=0"),
    ({"tolerance": 0}, "Expected `tolerance` > 0. Received: tolerance=0"),
])
def test_bad_arguments_are_rejected_before_any_child_starts(static_cnn_blob, bad, message):
    with pytest.raises(tflite_export.ExportError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        run_on_gpu(static_cnn_blob, **bad)


def test_benchmark_on_gpu_survives_tensorflow_in_this_process_and_labels_software(device, static_cnn_blob):
    import tensorflow  # noqa: F401  (the in-process GPU accelerator segfaulted with this imported)

    result = tflite_export.benchmark(static_cnn_blob, runs=3, warmup=1, accelerator="gpu")
    assert result.accelerator == "gpu" and result.fully_accelerated is True
    assert result.median_ms > 0 and result.load_ms > 0
    assert result.device == device.device and result.software == device.software
    if result.software:
        assert result.note.startswith("software Vulkan") and "says nothing about GPU speed" in result.note


def _kstruct(*argv, cwd):
    return kstruct(*argv, cwd=cwd, timeout=300)


def test_cli_bench_gpu_prints_the_device_and_whether_it_is_software(device, static_cnn_blob, tmp_path):
    (tmp_path / "m.tflite").write_bytes(static_cnn_blob)
    done = _kstruct("bench", "m.tflite", "--accelerator", "gpu", "--runs", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["device"] == device.device and result["software"] == device.software
    assert result["fully_accelerated"] is True


def test_cli_export_gpu_runs_the_check(device, tmp_path):
    _static_cnn().save(tmp_path / "m.keras")
    done = _kstruct("export", "m.keras", "--target", "gpu", "--out", "m.tflite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"gpu run check: fully accelerated on {device.device}" in done.stdout
    assert (tmp_path / "m.tflite").is_file()


def _one_hot_layer():
    import keras

    @keras.saving.register_keras_serializable(package="kstruct_test_gpu")
    class OneHot(keras.layers.Layer):
        def call(self, x):
            return keras.ops.one_hot(keras.ops.cast(x * 4, "int32"), 4)

    return OneHot


def test_cli_export_gpu_refuses_a_file_the_table_passes_but_the_gpu_refuses(device, tmp_path, capsys):
    import keras

    from kstruct.cli import main

    # ONE_HOT is on the GPU op table, so convert(target="gpu") accepts it; the accelerator refuses
    # indices whose last dimension is not 1 (benchmarks/gpu_op_table.py). (CUMSUM, which crashes the
    # runner, is now refused by the table itself: targets.GPU_OPS_FAILING_AT_RUN.)
    # In-process (kstruct.cli.main): the console script could not load this test's custom layer.
    inputs = keras.Input((4, 4, 4))
    keras.Model(inputs, _one_hot_layer()()(inputs)).save(tmp_path / "c.keras")
    assert main(["export", str(tmp_path / "c.keras"), "--target", "gpu", "--out", str(tmp_path / "c.tflite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kstruct: error: The file does not run correctly on LiteRT's GPU accelerator: "
                              "refused by the GPU accelerator")
    assert "ONE_HOT (OneHot indices channel dimension must be 1)" in err[-1]
    assert not (tmp_path / "c.tflite").exists()


def test_runner_needs_neither_tensorflow_nor_kstruct(device, static_cnn_blob, tmp_path):
    """The device machine has LiteRT and numpy only: run the check with TF, Keras and kstruct blocked."""
    (tmp_path / "m.tflite").write_bytes(static_cnn_blob)
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'kstruct', 'tf_keras'): sys.modules[name] = None\n"
        "import tflite_export\n"
        "print(tflite_export.run_on_gpu(sys.argv[1]).status)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.tflite")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "accelerated"


@pytest.mark.slow
def test_mobilenet_v2_gpu_target_passes_the_run_check(device):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(96, 96, 3), weights=None, classifier_activation=None
    )
    verdict = run_on_gpu(tflite_export.convert(model, "gpu"), runs=1)
    assert verdict.status == "accelerated", verdict.message


@pytest.mark.slow
def test_optimize_for_gpu_records_the_run_verdict_of_the_pruned_file(device, mnist):
    import kstruct
    from tests.conftest import compiled, tiny_cnn

    x, y, xt, yt = mnist
    result = kstruct.optimize(
        compiled(tiny_cnn()), "prune(0.5)", train_data=(x[:256], y[:256]), validation_data=(xt[:64], yt[:64]),
        epochs=1, target="gpu", verbose=0,
    )
    note = result.report.final.notes["gpu_run"]
    assert note["status"] == "accelerated", note["message"]
    assert note["device"] == device.device and note["software"] == device.software
    assert note["max_abs_diff"] <= 1e-5  # fp32 enforced on the GPU: the CPU's float outputs, to rounding
    assert json.loads(result.report.to_json())["stages"][-1]["notes"]["gpu_run"]["status"] == "accelerated"
    assert "gpu_run" not in result.report.stages[0].notes
