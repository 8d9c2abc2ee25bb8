"""`kstruct optimize --teacher`: a teacher that cannot teach is one error line, before any training."""

import os
import subprocess
import sys

import keras
import numpy as np

from tests.conftest import compiled, tiny_cnn


def test_cli_refuses_a_mismatched_teacher_with_one_line_naming_both_shapes(tmp_path):
    compiled(tiny_cnn("student")).save(tmp_path / "model.keras")
    inputs = keras.Input((28, 28, 1))
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)), name="small").save(tmp_path / "t.keras")
    np.savez(tmp_path / "data.npz", x=np.zeros((8, 28, 28, 1), "float32"), y=np.zeros(8, "int64"))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["kstruct", "optimize", str(tmp_path / "model.keras"), "--strategy", "distill", "--data",
         str(tmp_path / "data.npz"), "--teacher", str(tmp_path / "t.keras"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "kstruct: error: Teacher `small` outputs shape (None, 3), but the student `student` outputs (None, 10); "
        "distillation compares them class by class, so they must match. Pass a teacher= with the student's "
        "output shape."
    )
    assert not (tmp_path / "out").exists()
