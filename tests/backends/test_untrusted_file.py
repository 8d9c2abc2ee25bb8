"""A `.keras` file cannot choose what the TensorFlow conversion child imports (issue 19, part 1).

Off TensorFlow, conversion runs in a TensorFlow child process that must first import the modules
defining the model's custom classes. A file can put `{"module": ..., "registered_name": ...}` dicts
anywhere in a layer's config, and Keras's safe mode loads them as plain values. The crafted file
below names `evilmod`, a module on the path that writes a marker when imported: the marker must
never appear, through `kstruct.optimize`, `kstruct optimize` and `kstruct export`.
"""

import os

import keras
import numpy as np
import pytest

import kstruct
from tests.backends.conftest import BACKEND, off_tensorflow
from tests.console import kstruct as kstruct_cli

pytestmark = [pytest.mark.backends, off_tensorflow]

EVIL_MODULE = """\
import os
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "IMPORTED"), "w").write("imported")
"""


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """(folder, crafted .keras path, training .npz path); `folder` holds evilmod.py."""
    folder = tmp_path_factory.mktemp("crafted")
    (folder / "evilmod.py").write_text(EVIL_MODULE)
    forged = {"module": "evilmod", "registered_name": "x", "class_name": "y"}
    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((8,)), layers.Dense(4), layers.Dropout(0.0, seed=forged), layers.Dense(3, activation="softmax")]
    )
    model.save(folder / "evil.keras")
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.random((64, 8), dtype=np.float32), y=rng.integers(0, 3, 64))
    return folder


@pytest.mark.skipif(BACKEND != "jax", reason="the console script's export runs once, on jax; torch runs its optimize")
def test_kstruct_export_of_a_crafted_file_imports_nothing_the_file_names(crafted, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{crafted}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = crafted / "model.tflite"
    done = kstruct_cli("export", crafted / "evil.keras", "--target", "float32", "--out", out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[4:8] == b"TFL3"
    assert not (crafted / "IMPORTED").exists(), "the conversion child imported a module named by the file"


@pytest.mark.skipif(BACKEND != "torch", reason="the console script's optimize runs once, on torch; jax runs optimize in-process")
def test_kstruct_optimize_of_a_crafted_file_imports_nothing_the_file_names(crafted, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{crafted}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = kstruct_cli(
        "optimize", crafted / "evil.keras", "--strategy", "prune(0.5)", "--data", crafted / "data.npz",
        "--target", "float32", "--epochs", "1", "--loss", "sparse_categorical_crossentropy", "--out", crafted / "out",
    )
    assert done.returncode == 0, done.stderr
    assert (crafted / "out" / "model.tflite").read_bytes()[4:8] == b"TFL3"
    assert not (crafted / "IMPORTED").exists(), "the conversion child imported a module named by the file"


@pytest.mark.skipif(BACKEND != "jax", reason="in-process optimize runs once, on jax; torch runs the console script's")
def test_optimize_in_process_on_a_crafted_file_imports_nothing_the_file_names(crafted, monkeypatch):
    monkeypatch.syspath_prepend(str(crafted))  # the child copies this process's sys.path
    model = keras.saving.load_model(crafted / "evil.keras")  # safe mode on: it loads
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = np.load(crafted / "data.npz")
    result = kstruct.optimize(
        model, "prune(0.5)", train_data=(data["x"], data["y"]), epochs=1, target="float32", verbose=0
    )
    assert result.tflite[4:8] == b"TFL3"
    assert not (crafted / "IMPORTED").exists(), "the conversion child imported a module named by the file"
