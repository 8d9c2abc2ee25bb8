"""The child process that keeps a native crash (converter, LiteRT) out of the user's process."""

import operator
import os
import signal

import keras
import numpy as np
import pytest

import tflite_export
from tflite_export import ExportError
from tflite_export._isolate import run_isolated


def test_segfault_in_the_child_becomes_an_export_error_naming_the_signal():
    with pytest.raises(ExportError) as caught:
        run_isolated(signal.raise_signal, signal.SIGSEGV, what="The test step", hint="Do something else.")
    assert str(caught.value) == (
        "The test step crashed (SIGSEGV, signal 11) in a child process; your Python process is unharmed. "
        "Do something else."
    )


def test_child_result_comes_back():
    assert run_isolated(operator.add, b"ab", b"cd", what="x") == b"abcd"


def test_child_runs_with_the_extra_environment_on_top_of_this_one(monkeypatch):
    monkeypatch.setenv("KSTRUCT_KEPT", "kept")
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # as in a JAX process: the child must get tensorflow
    assert run_isolated(os.getenv, "KERAS_BACKEND", what="x", env={"KERAS_BACKEND": "tensorflow"}) == "tensorflow"
    assert run_isolated(os.getenv, "KSTRUCT_KEPT", what="x", env={"KERAS_BACKEND": "tensorflow"}) == "kept"


def test_child_imports_the_preload_modules_before_the_function():
    with pytest.raises(ModuleNotFoundError, match="No module named 'kstruct_no_such_module'"):
        run_isolated(operator.add, 1, 2, what="x", preload=["kstruct_no_such_module"])
    assert run_isolated(operator.add, 1, 2, what="x", preload=["json"]) == 3


def test_exception_in_the_child_is_raised_again_in_the_parent():
    with pytest.raises(ValueError, match="invalid literal for int"):
        run_isolated(int, "not a number", what="x")


def test_child_that_exits_without_a_result_is_an_export_error():
    with pytest.raises(ExportError, match=r"^The test step failed in a child process \(exit code 3; its log is above\)\.$"):
        run_isolated(os._exit, 3, what="The test step")


def test_nan_calibration_data_is_refused_before_the_converter_runs(tiny_dense):
    x = np.random.default_rng(0).random((16, 8)).astype("float32")
    x[5, 2] = np.nan
    with pytest.raises(ExportError) as caught:
        tflite_export.convert(tiny_dense, "int8", representative_data=x)
    assert str(caught.value).startswith("representative_data holds NaN or infinite values (sample 5, 1 of 16 samples)")


def test_nan_weights_are_refused_before_the_converter_runs(tiny_dense):
    import keras

    model = keras.models.clone_model(tiny_dense)
    kernel, bias = tiny_dense.layers[0].get_weights()
    kernel[0, 0] = np.nan
    model.layers[0].set_weights([kernel, bias])
    x = np.random.default_rng(0).random((16, 8)).astype("float32")
    with pytest.raises(ExportError, match=r"^The model's weights hold NaN values \(.*kernel.*\): training diverged"):
        tflite_export.convert(model, "int8", representative_data=x)


@pytest.mark.slow
def test_isolated_conversion_gives_the_same_file_as_in_process(tiny_dense):
    x = np.random.default_rng(0).random((16, 8)).astype("float32")
    in_process = tflite_export.convert(tiny_dense, "int8", representative_data=x, isolate=False)
    isolated = tflite_export.convert(tiny_dense, "int8", representative_data=x, isolate=True)
    assert [t.dtype for t in tflite_export.analyze(isolated).inputs] == ["int8"]
    assert isolated == in_process  # the same converter on the same model and samples: the same bytes


def test_isolated_litert_run_gives_the_same_outputs(tiny_dense):
    blob = tflite_export.convert(tiny_dense, "float32")
    x = np.random.default_rng(0).random((5, 8)).astype("float32")
    np.testing.assert_array_equal(tflite_export.predict(blob, x, isolate=True), tflite_export.predict(blob, x))


def test_isolated_litert_error_is_raised_again_in_the_parent(tiny_dense):
    blob = tflite_export.convert(tiny_dense, "float32")
    with pytest.raises(ExportError, match=r"^x has shape \(2, 3\); the model expects inputs of shape \(None, 8\)"):
        tflite_export.predict(blob, np.zeros((2, 3), "float32"), isolate=True)


@keras.saving.register_keras_serializable(package="kstruct_tests_isolation")
class _Scaled(keras.layers.Layer):
    """A registered custom layer, defined in this (imported) test module."""

    def call(self, x):
        return 2.0 * x


@keras.saving.register_keras_serializable(package="kstruct_tests_isolation")
def _halve(x):
    return 0.5 * x


def test_preload_modules_come_from_live_classes_never_from_names_in_the_config():
    from tflite_export._via_tensorflow import modules_to_preload

    layers = keras.layers
    forged = {"module": "kstruct_evil_module", "registered_name": "x", "class_name": "y"}
    inner = keras.Sequential([keras.Input((4,)), _Scaled(), layers.Dense(4, activation=_halve)], name="inner")
    model = keras.Sequential([keras.Input((4,)), layers.Dropout(0.0, seed=forged), inner, layers.Dense(2)])
    assert modules_to_preload(model) == [__name__]  # the nested model's layer and the registered function
    # A forged module under a registered name the user has: the live class's module is used, not the file's.
    forged_known = {**forged, "registered_name": "kstruct_tests_isolation>_Scaled"}
    plain = keras.Sequential([keras.Input((4,)), layers.Dropout(0.0, seed=forged_known), layers.Dense(2)])
    assert modules_to_preload(plain) == [__name__]
    assert modules_to_preload(keras.Sequential([keras.Input((4,)), layers.Dropout(0.0, seed=forged)])) == []
