"""Reading the CLI's input files (.keras, .npz, .tflite) and writing its outputs atomically.

Every problem with a file becomes a `UsageError` that names the file and the fix.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path

from kstruct.cli._usage import UsageError


_MAX_QUOTED = 300  # characters of a library's message quoted in the one error line


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= _MAX_QUOTED else line[:_MAX_QUOTED] + "..."


def _root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a chain: Keras wraps "Could not locate class 'X'" in a vaguer TypeError."""
    seen = {id(err)}
    while (inner := err.__cause__ or err.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        err = inner
    return err


def _keras_version(file: Path) -> str | None:
    """The `keras_version` a `.keras` file's metadata.json records, or None."""
    try:
        with zipfile.ZipFile(file) as archive:
            version = json.loads(archive.read("metadata.json")).get("keras_version")
    except (KeyError, ValueError, AttributeError, OSError, zipfile.BadZipFile, zlib.error):
        return None
    return version if isinstance(version, str) else None


def _load_failure(path: str, err: BaseException) -> str:
    """What to say when Keras raises on a `.keras` file, with the fix where one is known."""
    cause = _root_cause(err)
    damaged = (zipfile.BadZipFile, zlib.error, EOFError)
    if isinstance(err, damaged) or isinstance(cause, damaged):
        return f"{path} is damaged: {_first_line(cause)}; save or copy it again"
    text = str(cause).strip().split(" Full object config:")[0]
    sentence = _first_line(text.split(". ")[0])
    if "safe_mode" in text:  # Keras's own advice (safe_mode=False) is not something the command can take
        return (
            f"Keras refuses to load {path} in safe mode: {sentence}. kstruct never turns safe mode off; "
            "if you trust the file, load it in Python (keras.models.load_model(path, safe_mode=False)) and pass "
            "the model to kstruct.optimize or tflite_export.convert"
        )
    if "Could not locate" in text:
        return (
            f"Keras cannot load {path}: {sentence}. The kstruct command knows only Keras's and kstruct's "
            "classes; load the model in Python with its classes imported and pass it to kstruct.optimize or "
            "tflite_export.convert"
        )
    return f"{path} is not a Keras model file (.keras): {_first_line(cause)}"


def load_keras_model(path: str, *, compile: bool = True):
    """Loads a `.keras` file, or raises UsageError saying why it cannot, in one line.

    With `compile=False` (export) the compile config is not read: it is the one part
    of a tf_keras (Keras 2) file Keras 3 cannot use, so only commands that train
    refuse such files.
    """
    import keras

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(file):
        with open(file, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # a zip's first entry, but no directory at the end: cut short
                raise UsageError(
                    f"{path} is damaged or truncated: it begins as a .keras zip archive but does not end as one; "
                    "save or copy it again"
                )
        raise UsageError(f"{path} is not a Keras model file (.keras): it is not a .keras zip archive")
    version = _keras_version(file)
    if compile and version is not None and version.split(".")[0] in ("1", "2"):
        # Keras 3 loads the layers, but the compile config's steps_per_execution=null breaks its predict.
        raise UsageError(
            f"{path} was written by tf_keras / Keras 2 (keras_version {version}), whose compile settings Keras 3 "
            "cannot train with. Save it again from Keras 3: m = keras.models.load_model(path, compile=False); "
            "m.compile(optimizer=..., loss=..., metrics=[...]); m.save('model.keras'); or rebuild the model in "
            "Keras 3 and load its weights"
        )
    try:
        with warnings.catch_warnings():
            # A model saved compiled but untrained: its optimizer state is skipped, with a warning that
            # would break the one-line promise; kstruct compiles every model with a fresh optimizer anyway.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.models.load_model(file, compile=compile)
    except Exception as err:  # Keras raises many types for files that are not models
        raise UsageError(_load_failure(path, err)) from None


def _object_array(path: str, name: str | None) -> UsageError:
    what = f"array {name!r}" if name else "an array"
    return UsageError(
        f"{path} holds {what} of Python objects (dtype object), which kstruct does not load (unpickling can run "
        "code); save numbers instead, e.g. numpy.savez(path, x=x.astype('float32'), y=y.astype('int64'))"
    )


def _read_npz(path: str, archive, names: list[str] | None = None) -> dict:
    """The arrays `names` (default: all) of an open `.npz`; an array of Python objects (pickled) is refused by name."""
    arrays = {}
    for name in archive.files if names is None else names:
        try:
            arrays[name] = archive[name]
        except ValueError as err:
            if "allow_pickle" in str(err):
                raise _object_array(path, name) from None
            raise
    return arrays


def load_npz(path: str, *, required: tuple[str, ...] = ("x", "y")) -> dict:
    """Loads an `.npz` of named arrays; raises UsageError naming missing arrays."""
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"data file {path} does not exist")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = _read_npz(path, archive)
    except UsageError:
        raise
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
    """Calibration inputs from an `.npz` (array `x`, else the first) or an `.npy`: numbers only."""
    array = _load_calibration(path)
    if array.dtype.kind not in "biuf":  # strings would fail inside the converter, with a traceback
        raise UsageError(
            f"calibration file {path!r} holds an array of dtype {array.dtype}; calibration inputs must be numbers "
            "shaped like the model's input, e.g. numpy.savez(path, x=x.astype('float32'))"
        )
    return array


def _load_calibration(path: str):
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"calibration file {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            if not loaded.files:
                raise UsageError(f"calibration file {path!r} holds no arrays")
            name = "x" if "x" in loaded.files else loaded.files[0]
            return _read_npz(path, loaded, [name])[name]
    except UsageError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):  # an .npy of objects
            raise _object_array(path, None) from None
        raise UsageError(f"cannot read calibration file {path!r} as .npz or .npy: {_first_line(err)}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise UsageError(f"cannot read calibration file {path!r} as .npz or .npy: {_first_line(err)}") from None


def read_tflite(path: str) -> bytes:
    """The bytes of a `.tflite` file, or a UsageError naming what is wrong with it."""
    from tflite_export import ExportError, read_model

    if not os.path.isfile(path):
        raise UsageError(f"model file {path!r} does not exist")
    try:
        return read_model(path)
    except ExportError:
        raise UsageError(f"{path!r} is not a TFLite file (no 'TFL3' identifier)") from None
