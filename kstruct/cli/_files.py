"""Reading the CLI's input files (.keras, .h5, .npz, .tflite) and writing its outputs atomically.

Every problem with a file becomes a `UsageError` that names the file and the fix.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import zipfile
import zlib
from pathlib import Path

from kstruct.cli._usage import UsageError


_MAX_QUOTED = 300  # characters of a library's message quoted in the one error line


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= _MAX_QUOTED else line[:_MAX_QUOTED] + "..."


_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def add_loading_options(parser) -> None:
    """`--import MODULE` and `--unsafe-deserialization`, for every subcommand that loads a model file."""
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import this Python module (e.g. my_layers, found from the current folder like python -m) before "
             "loading, so the custom classes it registers resolve; repeat for several",
    )
    parser.add_argument(
        "--unsafe-deserialization", action="store_true",
        help="let the model file run the Python code it carries (Lambda layers): only for files you trust",
    )


def import_modules(names: list[str]) -> None:
    """Imports the modules the user named with --import, from the current folder first (as `python -m` does).

    The user names them on the command line: nothing read from a model file decides what is imported.
    """
    for name in names:
        if name.endswith(".py") or not _MODULE_NAME.fullmatch(name):  # "my_layers.py": a file name, not a module
            hint = Path(name).stem if name.endswith(".py") else None
            fix = f"; name the module, not the file: --import {hint}" if hint and _MODULE_NAME.fullmatch(hint) else ""
            raise UsageError(f"--import expects a Python module name such as my_layers. Received: {name!r}{fix}")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise UsageError(
                f"--import {name}: {_first_line(err)}; run kstruct from the folder that holds {name.split('.')[0]}.py "
                "or add that folder to PYTHONPATH"
            ) from None
        except Exception as err:  # the user's module raised while it was imported
            raise UsageError(f"--import {name} failed: {type(err).__name__}: {_first_line(err)}") from None


def load_keras_model(path: str, *, compile: bool = True, unsafe: bool = False):
    """Loads a `.keras` or `.h5` file (Keras 3 or tf_keras) with `kstruct.load_model`, or raises UsageError in one line.

    `unsafe` (the user's --unsafe-deserialization) turns Keras's safe mode off for this one load.
    """
    from kstruct.errors import ModelFileError
    from kstruct.loading import load_model

    try:
        return load_model(path, compile=compile, safe_mode=not unsafe)
    except ModelFileError as err:
        if err.reason == "code":
            raise UsageError(
                f"{path} carries Python code ({err.detail}), which kstruct does not run unless asked; if you trust "
                "the file, pass --unsafe-deserialization"
            ) from None
        if err.reason == "unknown_class":
            raise UsageError(
                f"Keras cannot load {path}: {err.detail}. Pass --import MODULE, the module that defines it "
                "(registered with @keras.saving.register_keras_serializable)"
            ) from None
        raise UsageError(str(err)) from None


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


# The --data help of every command that trains (optimize, search): what load_training_npz reads.
TRAINING_NPZ_HELP = ".npz with arrays x and y (optional: x_val and y_val, both; sample_weight, sample_weight_val)"


def load_training_npz(path: str) -> tuple[tuple, tuple | None]:
    """`(x, y)` from an `.npz`, and `(x_val, y_val)` when it holds them (else None); each with its
    sample weights, `(x, y, sample_weight)`, when the file holds `sample_weight` (`sample_weight_val`).

    One of `x_val`/`y_val` without the other is refused: ignoring it would silently
    measure on a slice of the training data instead; so is `sample_weight_val` without them.
    """
    arrays = load_npz(path)
    present = [name for name in ("x_val", "y_val") if name in arrays]
    if len(present) == 1:
        other = "y_val" if present[0] == "x_val" else "x_val"
        raise UsageError(
            f"{path} has {present[0]} but no {other}; save both "
            "(numpy.savez(path, x=..., y=..., x_val=..., y_val=...)) or neither"
        )
    if "sample_weight_val" in arrays and not present:
        raise UsageError(f"{path} has sample_weight_val but no x_val and y_val; save them with it, or drop it")
    train = (arrays["x"], arrays["y"]) + ((arrays["sample_weight"],) if "sample_weight" in arrays else ())
    validation = None
    if present:
        validation = (arrays["x_val"], arrays["y_val"]) + (
            (arrays["sample_weight_val"],) if "sample_weight_val" in arrays else ())
    return train, validation


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
