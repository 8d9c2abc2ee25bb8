"""`kstruct optimize --teacher`: a teacher that cannot teach is one error line, before any training."""

import keras
import numpy as np

from tests.conftest import compiled, tiny_cnn
from tests.console import kstruct


def test_cli_refuses_a_mismatched_teacher_with_one_line_naming_both_shapes(tmp_path):
    compiled(tiny_cnn("student")).save(tmp_path / "model.keras")
    inputs = keras.Input((28, 28, 1))
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)), name="small").save(tmp_path / "t.keras")
    np.savez(tmp_path / "data.npz", x=np.zeros((8, 28, 28, 1), "float32"), y=np.zeros(8, "int64"))
    done = kstruct("optimize", tmp_path / "model.keras", "--strategy", "distill", "--data", tmp_path / "data.npz",
                   "--teacher", tmp_path / "t.keras", "--out", tmp_path / "out", timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "kstruct: error: Teacher `small` outputs shape (None, 3), but the student `student` outputs (None, 10); "
        "distillation compares them class by class, so they must match. Pass a teacher= with the student's "
        "output shape."
    )
    assert not (tmp_path / "out").exists()
