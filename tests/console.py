"""Runs the installed `kstruct` console script on the code under test, as a user's shell would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def kstruct(*args: str, timeout: int = 600, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """`kstruct ARGS...` in a subprocess (in folder `cwd`, default this one), with this checkout first on PYTHONPATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    script = shutil.which("kstruct", path=path)
    assert script, "the kstruct console script is not installed; run `pip install -e .`"
    env = dict(os.environ, PATH=path, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([script, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def error_line(done: subprocess.CompletedProcess, status: int = 2) -> str:
    """The one `kstruct: error: ...` line of a failed run; fails the test on anything else on stderr."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == status, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kstruct: error: "), done.stderr  # no native log lines either
    return lines[0]
