"""Bad input through the `kstruct` command: one `kstruct: error: ...` line and exit status 2, never a traceback.

Ctrl-C exits 130. A few cases run the console script in a subprocess (native log lines,
Python warnings and the exit status are what a user sees); the rest go through `main`,
the function the console script calls, to keep the suite fast. The same inputs through
`kstruct.optimize` are in tests/test_data_handling.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from kstruct.cli import main
from tests.console import ROOT, error_line, kstruct

RNG = np.random.default_rng(0)


def _classifier() -> keras.Model:
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3, activation="softmax")],
        name="clf",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_input")
    x, y = RNG.random((64, 8)).astype("float32"), RNG.integers(0, 3, 64)
    model = _classifier()
    model.fit(x, y, epochs=1, verbose=0)
    model.save(folder / "model.keras")
    whole = (folder / "model.keras").read_bytes()
    (folder / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    keras.Sequential([keras.Input((8,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(3)]).save(
        folder / "lambda.keras"
    )
    np.savez(folder / "data.npz", x=x, y=y)
    np.savez(folder / "string_labels.npz", x=x, y=np.array(["cat", "dog"] * 32))
    np.savez(folder / "one_sample.npz", x=x[:1], y=y[:1])
    np.savez(folder / "string_inputs.npz", x=np.full((64, 8), "0.5"), y=y)
    np.savez(folder / "objects.npz", x=np.array([x[0], "text", None], dtype=object))  # pickled by numpy
    return folder


def test_export_of_a_model_keras_refuses_in_safe_mode_is_one_line(files, tmp_path):
    done = kstruct("export", files / "lambda.keras", "--target", "float32", "--out", tmp_path / "m.tflite")
    assert error_line(done) == (
        f"kstruct: error: {files}/lambda.keras carries Python code (Requested the deserialization of a `Lambda` "
        "layer whose `function` is a Python lambda), which kstruct does not run unless asked; if you trust the "
        "file, pass --unsafe-deserialization"
    )
    assert not (tmp_path / "m.tflite").exists()


def test_a_batch_size_tensorflow_cannot_hold_is_refused_while_parsing():
    done = kstruct("optimize", "m.keras", "--strategy", "prune(0.5)", "--data", "d.npz", "--out", "o",
                   "--batch-size", "99999999999999999999")
    assert error_line(done) == (
        "kstruct: error: argument --batch-size: expected a positive integer of at most 2147483647. "
        "Received: 99999999999999999999 (see kstruct optimize --help)"
    )


def test_ctrl_c_during_training_exits_130_with_one_line(files, tmp_path):
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, PATH=path, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    command = [
        shutil.which("kstruct", path=path), "optimize", str(files / "model.keras"), "--strategy", "prune(0.5)",
        "--data", str(files / "data.npz"), "--out", str(tmp_path / "o"), "--epochs", "100000", "--batch-size", "8",
    ]
    # As a terminal starts it: SIGINT handled, even where this suite runs with it ignored (a background job
    # of a shell without job control), which Python would otherwise pass on to the command.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = process.stdout.readline()  # the original model's line: training starts next
        assert first.startswith("kstruct: original:"), first + process.stderr.read()
        # CPython drops a KeyboardInterrupt that lands in a finalizer (`__del__` of a TensorFlow object):
        # rarely, the first Ctrl-C is lost, as it can be for a user, who presses it again. So does this test.
        for _ in range(3):
            process.send_signal(signal.SIGINT)
            try:
                out, err = process.communicate(timeout=40)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise AssertionError("three Ctrl-C did not stop kstruct optimize")
    finally:
        process.kill()
    done = subprocess.CompletedProcess(command, process.returncode, first + out, err)
    assert error_line(done, status=130) == "kstruct: error: interrupted"
    assert not (tmp_path / "o").exists()


def _main(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "{f}/truncated.keras", "--target", "float32"],
         "{f}/truncated.keras is damaged or truncated: it begins as a .keras zip archive but does not end as one; "
         "save or copy it again"),
        (["export", "{f}/model.keras", "--target", "int8", "--data", "{f}/objects.npz"],
         "{f}/objects.npz holds array 'x' of Python objects (dtype object), which kstruct does not load (unpickling "
         "can run code); save numbers instead, e.g. numpy.savez(path, x=x.astype('float32'), y=y.astype('int64'))"),
        (["export", "{f}/model.keras", "--target", "int8", "--data", "{f}/string_inputs.npz"],
         "calibration file '{f}/string_inputs.npz' holds an array of dtype <U3; calibration inputs must be numbers "
         "shaped like the model's input, e.g. numpy.savez(path, x=x.astype('float32'))"),
        (["optimize", "{f}/model.keras", "--strategy", "prune(0.5)", "--data", "{f}/string_inputs.npz"],
         "`train_data` inputs have dtype <U3, but model `clf` expects float32 inputs. Convert them to numbers, "
         "e.g. x.astype('float32')."),
        (["optimize", "{f}/model.keras", "--strategy", "prune(0.5)", "--data", "{f}/string_labels.npz"],
         "`train_data` labels have dtype <U3 (strings); Keras trains on numbers. Pass integer class ids, e.g. "
         "classes, y = np.unique(y, return_inverse=True)."),
        (["optimize", "{f}/model.keras", "--strategy", "prune(0.5)", "--data", "{f}/one_sample.npz"],
         "`train_data` has 1 sample: too few to hold out validation data (10%) and train on the rest. Pass "
         "validation_data=... (CLI: x_val and y_val in the .npz), or more samples."),
        (["optimize", "{f}/model.keras", "--strategy", "prune(0.5)", "--data", "{f}/data.npz", "--batch-size", "64",
          "--epochs", "1"],
         "prune(0.5) would reach 0.0% sparsity, not 50%: its schedule has only 1 optimizer step(s) (1 epoch(s) of "
         "1 batch(es)). Give it more steps (more training data, more epochs, or a smaller batch_size), or prune at "
         "once: prune(0.5, schedule='constant')."),
    ],
    ids=["truncated-keras", "object-npz", "string-calibration", "string-inputs", "string-labels", "one-sample", "too-few-prune-steps"],
)
def test_bad_input_is_one_line_with_status_2(files, capsys, tmp_path, argv, message):
    out = tmp_path / ("m.tflite" if argv[0] == "export" else "o")
    code, err = _main(capsys, *[a.format(f=files) for a in argv], "--out", out)
    assert (code, err) == (2, f"kstruct: error: {message.format(f=files)}\n")
    assert not out.exists()


def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_the_command_without_a_traceback(capsys):
    """CPython prints "Exception ignored in ..." for a KeyboardInterrupt raised in a `__del__` or a gc callback
    and drops it (the Ctrl-C test above once saw it land in JAX's gc callback): `main` raises it again."""
    from kstruct.cli import _interrupts_delivered

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt

    # Python handles SIGINT as a terminal's foreground process does (a background job starts with it ignored,
    # and then an interrupt raised again is dropped: no Ctrl-C can reach such a process anyway).
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), _interrupts_delivered():
            Finalized()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the interrupt arrives in a moment, outside the finalizer
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert capsys.readouterr().err == ""
