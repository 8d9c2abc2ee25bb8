"""`kstruct.load_model(path)`: a `.keras` or `.h5` model file, from Keras 3 or from tf_keras, as a Keras 3 model.

Why not `keras.saving.load_model`: tfmot's users, the people most likely to switch, hold
tf_keras files, and Keras 3 stumbles on them: `.h5` files with arguments Keras 3 dropped
(`groups`, `time_major`) or with tfmot's pruning and QAT wrappers still in them, `.keras`
files whose BatchNormalization axis is a list or whose compile settings break `predict`.
Here a tf_keras file's config is read as JSON, rewritten (`_legacy_config`), and loaded by
Keras from a fixed copy in a temporary folder; the user's file is only read.

Keras's safe mode stays on unless the caller passes `safe_mode=False` for this one load.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

from kstruct.errors import ModelFileError
from kstruct.loading import _legacy_h5
from kstruct.loading._compile import compile_arguments
from kstruct.loading._legacy_config import Rewrites, has_tfmot_wrappers, rewrite

log = logging.getLogger(__name__)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAX_QUOTED = 300  # characters of Keras's message quoted in the one error line


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


def _keras_failure(path: str, err: BaseException) -> ModelFileError:
    """Keras's error on a model file as one ModelFileError, with the fix where one is known."""
    cause = _root_cause(err)
    damaged = (zipfile.BadZipFile, zlib.error, EOFError)
    if isinstance(err, damaged) or isinstance(cause, damaged):
        return ModelFileError(f"{path} is damaged: {_first_line(cause)}; save or copy it again")
    text = str(cause).strip().split(" Full object config:")[0]
    sentence = _first_line(text.split(". ")[0])
    if "safe_mode" in text:
        return ModelFileError(
            f"{path} carries Python code ({sentence}); Keras's safe mode refuses to run it. If you trust the file, "
            "pass safe_mode=False",
            reason="code",
            detail=sentence,
        )
    if "Could not locate" in text or "Unknown layer" in text or "Unknown object" in text:
        return ModelFileError(
            f"Keras cannot load {path}: {sentence}. Import the module that defines the class (registered with "
            "@keras.saving.register_keras_serializable) before loading",
            reason="unknown_class",
            detail=sentence,
        )
    return ModelFileError(f"{path} is not a Keras model file (.keras): {_first_line(cause)}")


def _keras_load(path: str, source: str, *, safe_mode: bool):
    """`keras.saving.load_model(source)` uncompiled, its errors named after the user's `path`."""
    import keras

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.saving.load_model(source, compile=False, safe_mode=safe_mode)
    except ModelFileError:
        raise
    except Exception as err:  # Keras raises many types for files that are not models
        raise _keras_failure(path, err) from None


def _keras_version(archive: zipfile.ZipFile) -> str | None:
    try:
        version = json.loads(archive.read("metadata.json")).get("keras_version")
    except (KeyError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def _is_tf_keras(version: str | None) -> bool:
    return version is not None and version.split(".")[0] in ("1", "2")


def _say_unwrapped(path: str, rewrites: Rewrites) -> None:
    if rewrites.pruned:
        log.info("%s: unwrapped %d tfmot PruneLowMagnitude layer(s), masks applied", path, len(rewrites.pruned))
    if rewrites.quantized or rewrites.removed:
        warnings.warn(
            f"{path}: {len(rewrites.quantized)} tfmot quantization wrapper(s) unwrapped to plain float layers and "
            f"{len(rewrites.removed)} QuantizeLayer(s) removed; their fake-quant ranges are dropped, so the model "
            "predicts in float. Quantize it again with kstruct's 'qat' or 'ptq' step.",
            stacklevel=4,  # the caller of load_model
        )


def _load_h5(path: str, tmp: str, *, safe_mode: bool):
    target = os.path.join(tmp, "model.h5")
    rewrites, training_config = _legacy_h5.fixed_copy(path, target)
    model = _keras_load(path, target, safe_mode=safe_mode)
    _say_unwrapped(path, rewrites)
    return model, training_config


def _load_tf_keras_archive(path: str, tmp: str, archive: zipfile.ZipFile, *, safe_mode: bool):
    """A `.keras` zip written by tf_keras: config.json rewritten in a copy, compile settings kept apart."""
    try:
        config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError) as err:
        raise ModelFileError(f"{path} has no readable config.json: {_first_line(err)}") from None
    wrappers = has_tfmot_wrappers(config)
    if wrappers:
        raise ModelFileError(
            f"{path} holds tfmot wrappers ({', '.join(wrappers)}) in a .keras file, whose weights kstruct cannot "
            "map to plain layers; in tf_keras, save the model as .h5 (model.save('model.h5')), which "
            "kstruct.load_model unwraps, or strip the wrappers first (tfmot.sparsity.keras.strip_pruning)"
        )
    training_config = config.pop("compile_config", None)
    fixed, _ = rewrite(config)
    target = os.path.join(tmp, "model.keras")
    with zipfile.ZipFile(target, "w") as copy:
        for item in archive.infolist():
            data = json.dumps(fixed).encode() if item.filename == "config.json" else archive.read(item)
            copy.writestr(item, data)
    return _keras_load(path, target, safe_mode=safe_mode), training_config


def _refuse_directory(path: str) -> None:
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ModelFileError(
            f"{path} is a TensorFlow SavedModel folder, which Keras 3 cannot load as a model; in tf_keras, load "
            "it and save it as one file (tf_keras.models.load_model(path).save('model.h5')), then load model.h5"
        )
    raise ModelFileError(f"{path} is a folder, not a model file (.keras or .h5)")


def load_model(path: str | os.PathLike, *, compile: bool = True, safe_mode: bool = True):
    """Loads a `.keras` or `.h5` model file written by Keras 3 or by tf_keras (Keras 2).

    A Keras 3 `.keras` file loads as `keras.saving.load_model` loads it. A tf_keras file is
    read as data, fixed for Keras 3 and loaded from a temporary copy: arguments Keras 3
    dropped are removed where they change nothing, tfmot's `PruneLowMagnitude` wrappers
    become the plain layer with the mask applied, tfmot's quantization wrappers become
    plain float layers (a warning says their ranges are dropped), and the compile
    settings are translated to Keras 3's. The file itself is never modified.

    Args:
        path: a `.keras` zip or an HDF5 `.h5` model file.
        compile: compile the model with the file's compile settings, when it has any.
        safe_mode: Keras's safe mode for this one load; `False` runs Python code the file
            carries (Lambda layers), so pass it only for files you trust.

    Returns:
        The Keras 3 model.

    Raises:
        ModelFileError: the file is missing, damaged, a SavedModel folder, weights only,
            holds code (in safe mode) or classes not imported, or a setting Keras 3 lacks.

    Example:
        model = kstruct.load_model("pruned_with_tfmot.h5")
        result = kstruct.optimize(model, "prune(0.5) + qat", train_data=(x, y))
    """
    path = os.fspath(path)
    file = Path(path)
    if file.is_dir():
        _refuse_directory(path)
    if not file.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    with open(file, "rb") as f:
        head = f.read(8)
    with tempfile.TemporaryDirectory(prefix="kstruct_load_") as tmp:
        if head == _HDF5_SIGNATURE:
            model, training_config = _load_h5(path, tmp, safe_mode=safe_mode)
        elif zipfile.is_zipfile(file):
            try:
                with zipfile.ZipFile(file) as archive:
                    if "config.json" not in archive.namelist():
                        raise ModelFileError(
                            f"{path} is not a Keras model file (.keras): it is a zip archive without config.json"
                        )
                    if _is_tf_keras(_keras_version(archive)):
                        model, training_config = _load_tf_keras_archive(path, tmp, archive, safe_mode=safe_mode)
                    else:
                        return _load_keras3(path, compile=compile, safe_mode=safe_mode)
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:
                raise ModelFileError(f"{path} is damaged: {_first_line(err)}; save or copy it again") from None
        elif head[:4] == b"PK\x03\x04":  # a zip's first entry, but no directory at the end: cut short
            raise ModelFileError(
                f"{path} is damaged or truncated: it begins as a .keras zip archive but does not end as one; "
                "save or copy it again"
            )
        else:
            raise ModelFileError(
                f"{path} is not a Keras model file (.keras): it is neither a .keras zip archive nor an HDF5 .h5 file"
            )
    if compile and training_config:
        arguments = compile_arguments(training_config, path)
        if arguments is not None:
            model.compile(**arguments)
    return model


def _load_keras3(path: str, *, compile: bool, safe_mode: bool):
    import keras

    try:
        with warnings.catch_warnings():
            # A model saved compiled but untrained: its optimizer state is skipped, with a warning that
            # would break the CLI's one-line promise; kstruct compiles every model with a fresh optimizer anyway.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
    except Exception as err:
        raise _keras_failure(path, err) from None
