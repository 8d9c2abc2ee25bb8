"""Writing results without ever leaving a half-written, silently replaced or linked-through output.

The rules, each for a case found by trying it:
- checked before any work: an output that is a symbolic link (even a dangling one) is refused,
  since replacing it would delete or write into whatever it points at; so is an existing file
  where a directory goes, an existing output without overwrite, and a folder we cannot write in;
- built in a staging folder beside the output, then moved into place with one rename, so a
  crash or a kill never leaves half an output;
- the final rename is itself the check: two runs racing for one output cannot both win; the
  loser gets `OutputExistsError` (or, with overwrite, replaces the winner whole);
- written with the user's umask, as any other program's files;
- staging folders of killed runs are removed by the next run on the same output.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from kstruct.errors import KstructError

_STAGING_TAG = "kstruct-staging"


class OutputExistsError(KstructError, FileExistsError):
    """The output already exists and overwriting was not asked for."""

    def __init__(self, path: str | os.PathLike, flag: str = "overwrite=True"):
        self.path, self.flag = Path(path), flag
        super().__init__(f"Output {path} already exists; pass {flag} to replace it, or choose another path.")

    def with_flag(self, flag: str) -> "OutputExistsError":
        """The same error naming another way to overwrite (the CLI's `--overwrite`)."""
        return OutputExistsError(self.path, flag)


class OutputPathError(KstructError, OSError):
    """The output path cannot be written safely: a link, a file where a folder goes, or no permission."""


def _absolute(path: str | os.PathLike) -> Path:
    """`path` made absolute without following links (unlike `Path.resolve`), so a link stays a link."""
    return Path(os.path.abspath(os.fspath(path)))


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        target = os.readlink(path)
        state = "" if path.exists() else ", which does not exist"
        raise OutputPathError(
            f"Output {path} is a symbolic link (to {target}{state}); kstruct never writes or deletes through a "
            "link. Name the real path, or remove the link."
        )


def _probe_writable(folder: Path) -> None:
    """Raises OutputPathError unless a folder can be made in `folder`'s nearest existing ancestor."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"Cannot create the output's folder {folder}: {existing} is not a directory.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kstruct-probe-", dir=existing))
    except OSError as err:
        raise OutputPathError(
            f"Cannot write the output in {existing} ({err.strerror or err}); choose a writable path."
        ) from None


def check_can_write(
    path: str | os.PathLike, *, overwrite: bool, flag: str = "overwrite=True", directory: bool = True
) -> Path:
    """Checks, before any work, that `path` can be written: returns it absolute (links not followed).

    Raises:
        OutputExistsError: `path` exists (a non-empty directory or a file) and overwrite is off.
        OutputPathError: `path` is a symbolic link, a file where a directory goes (or the reverse),
            or its folder cannot be written.
    """
    path = _absolute(path)
    _refuse_link(path)
    cwd = Path.cwd()
    if overwrite and (path == cwd or path in cwd.parents):
        raise OutputPathError(f"Output {path} holds the current directory; replacing it would delete your work there.")
    if path.exists() and path.is_dir() != directory:
        kind, wanted = ("a directory", "a file") if path.is_dir() else ("a file", "a directory")
        raise OutputPathError(f"Output {path} is {kind}, but the output is {wanted}; remove it or choose another path.")
    if path.exists() and not overwrite and (not directory or any(path.iterdir())):
        raise OutputExistsError(path, flag)
    _probe_writable(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _remove_stale_staging(path: Path) -> None:
    """Removes staging folders that killed runs left beside `path` (their process is gone)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_STAGING_TAG}-(\d+)-")
    for entry in path.parent.glob(f".{glob.escape(path.name)}.{_STAGING_TAG}-*"):
        found = pattern.match(entry.name)
        if found and not entry.is_symlink() and entry.is_dir() and not _pid_alive(int(found.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _retire(path: Path) -> None:
    """Moves `path` aside and deletes it; a link is moved itself, never what it points at."""
    retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    try:
        os.rename(path, retired / path.name)
    except FileNotFoundError:
        pass  # another run retired it first
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def _move_into_place(staging: Path, path: Path, *, overwrite: bool, flag: str) -> None:
    """Renames `staging` to `path`. The rename itself refuses whatever appeared at `path` after the
    first check (it replaces only an empty directory), so no other run's output is lost unasked."""
    for _ in range(5):  # with overwrite, a racing run may put its output back between our renames
        _refuse_link(path)
        try:
            os.rename(staging, path)
            return
        except OSError as err:
            if err.errno == errno.ENOTDIR:
                raise OutputPathError(f"Output {path} became a file while kstruct worked; nothing was replaced.") from None
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if not overwrite:
                raise OutputExistsError(path, flag) from None
        _retire(path)
    raise OutputExistsError(path, flag)


def write_directory(
    path: str | os.PathLike, fill: Callable[[Path], None], *, overwrite: bool = False, flag: str = "overwrite=True"
) -> Path:
    """Builds a directory with `fill(staging_dir)` beside `path`, then moves it into place in one rename.

    A failure while filling leaves any existing `path` untouched; of two runs racing for
    one `path`, exactly one wins (without overwrite, the other raises OutputExistsError).
    """
    path = check_can_write(path, overwrite=overwrite, flag=flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_STAGING_TAG}-{os.getpid()}-", dir=path.parent))
    try:
        fill(staging)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700
        _move_into_place(staging, path, overwrite=overwrite, flag=flag)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def write_file(path: str | os.PathLike, data: bytes, *, overwrite: bool = False, flag: str = "overwrite=True") -> Path:
    """Writes `data` to a temporary file beside `path`, then moves it into place (never through a link).

    Without overwrite the move is a hard link, which fails if `path` appeared meanwhile.
    """
    path = check_can_write(path, overwrite=overwrite, flag=flag, directory=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
        _refuse_link(path)
        if overwrite:
            os.replace(tmp, path)  # replaces a link itself, never its target
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(path, flag) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
