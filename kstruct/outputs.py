"""Writing results without ever leaving a half-written or silently replaced output."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from kstruct.errors import KstructError


class OutputExistsError(KstructError, FileExistsError):
    """The output already exists and overwriting was not asked for."""


def check_can_write(path: str | os.PathLike, *, overwrite: bool, flag: str = "overwrite=True") -> Path:
    """Raises OutputExistsError if `path` exists (a non-empty directory or a file) and overwrite is off."""
    path = Path(path)
    exists = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if exists and not overwrite:
        raise OutputExistsError(f"Output {path} already exists; pass {flag} to replace it, or choose another path.")
    return path


def write_directory(path: str | os.PathLike, fill: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Builds a directory with `fill(tmp_dir)` beside `path`, then moves it into place in one rename.

    A failure while filling leaves any existing `path` untouched.
    """
    path = check_can_write(path, overwrite=overwrite).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        fill(staging)
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, retired / path.name)
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def write_file(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Writes `data` to a temporary file beside `path`, then renames it into place."""
    path = check_can_write(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
