"""Reading the CLI's input files (.keras, .npz, .tflite) and writing its outputs atomically.

Every problem with a file becomes a `UsageError` that names the file and the fix.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from kstruct.cli._usage import UsageError


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_keras_model(path: str):
    """Loads a `.keras` file, or raises UsageError saying why it is not one."""
    import keras

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(file):
        raise UsageError(f"{path} is not a Keras model file (.keras): it is not a .keras zip archive")
    try:
        return keras.models.load_model(file)
    except Exception as err:  # Keras raises many types for files that are not models
        raise UsageError(f"{path} is not a Keras model file (.keras): {_first_line(err)}") from None


def load_npz(path: str, *, required: tuple[str, ...] = ("x", "y")) -> dict:
    """Loads an `.npz` of named arrays; raises UsageError naming missing arrays."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"data file {path} does not exist")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as err:
        raise UsageError(f"{path} is not a numpy .npz file: {_first_line(err)}") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "no arrays"
        raise UsageError(
            f"{path} has no array {' or '.join(repr(m) for m in missing)} (found: {found}); "
            "save it with numpy.savez(path, x=inputs, y=labels)"
        )
    return arrays


def load_training_npz(path: str) -> tuple[tuple, tuple | None]:
    """`(x, y)` from an `.npz`, and `(x_val, y_val)` when it holds them (else None).

    One of `x_val`/`y_val` without the other is refused: ignoring it would silently
    measure on a slice of the training data instead.
    """
    arrays = load_npz(path)
    present = [name for name in ("x_val", "y_val") if name in arrays]
    if len(present) == 1:
        other = "y_val" if present[0] == "x_val" else "x_val"
        raise UsageError(
            f"{path} has {present[0]} but no {other}; save both "
            "(numpy.savez(path, x=..., y=..., x_val=..., y_val=...)) or neither"
        )
    validation = (arrays["x_val"], arrays["y_val"]) if present else None
    return (arrays["x"], arrays["y"]), validation


def load_calibration(path: str):
    """Calibration inputs from an `.npz` (array `x`, else the first) or an `.npy`."""
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"calibration file {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read calibration file {path!r} as .npz or .npy: {_first_line(err)}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        if not loaded.files:
            raise UsageError(f"calibration file {path!r} holds no arrays")
        return loaded["x"] if "x" in loaded.files else loaded[loaded.files[0]]


def read_tflite(path: str) -> bytes:
    """The bytes of a `.tflite` file, or a UsageError naming what is wrong with it."""
    from tflite_export import ExportError, read_model

    if not os.path.isfile(path):
        raise UsageError(f"model file {path!r} does not exist")
    try:
        return read_model(path)
    except ExportError:
        raise UsageError(f"{path!r} is not a TFLite file (no 'TFL3' identifier)") from None


def atomic_write(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temp file in the same directory and os.replace: never a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tflite", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
