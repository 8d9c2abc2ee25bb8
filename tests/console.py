"""Runs the `kstruct` command (and the tests' helper scripts) on the code under test, each run in a process
of its own, as a user's shell would.

Every run used to start a fresh interpreter, and each paid TensorFlow's import again: about 4.4 s of CPU,
over 30 times a suite, two of the suite's eight minutes on two cores. So by default one *zygote* per
pytest worker imports TensorFlow, Keras and the `kstruct` command once, and forks a fresh child for each
run. The child runs the console script's entry point (`kstruct.cli:main`), or `python -m MODULE`, with the
run's argv, environment, working folder and stdout/stderr files of its own; its exit status, signals
included, comes back as a process's does. What the child runs is the command's code, start to end, in a
process of its own; only the interpreter's start and the imports are shared.

What a fork cannot show still runs through a fresh interpreter:
- the installed console script itself, and what happens while TensorFlow loads (its native start-up
  lines, Ctrl-C during the import): `real=True`;
- a run whose environment differs in what TensorFlow or Keras read as they import (`KERAS_BACKEND`, ...);
- every run when `KSTRUCT_TEST_CONSOLE=script` is set (the slow, full check).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Read by TensorFlow or Keras while they import: a run whose value differs needs a fresh interpreter.
# (TF_CONFIG is read when a strategy is made, in the child.)
_READ_AT_IMPORT = ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES",
                   "KERAS_HOME", "TF_USE_LEGACY_KERAS", "XLA_FLAGS")

# The zygote reads one JSON request per line on stdin, forks a child for it and answers `{"id", "pid"}`
# at once, then `{"pid", "status"}` when that child ends. The end of stdin stops it.
_ZYGOTE = r"""
import atexit, json, os, runpy, select, sys, tempfile, traceback
import tensorflow, keras  # the imports every run would otherwise pay
from kstruct.cli import main

answers = os.fdopen(os.dup(1), "w", buffering=1)

def child(request):
    answers_fd = answers.fileno()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # TMPDIR as the run sets it, not as the zygote found it
    for fd, name, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                           (2, request["stderr"], os.O_WRONLY)):
        target = os.open(name, mode)
        os.dup2(target, fd)
        os.close(target)
    os.close(answers_fd)
    sys.stdin, sys.stdout, sys.stderr = open(0, closefd=False), open(1, "w", closefd=False), open(2, "w", closefd=False)
    sys.argv = request["argv"]
    try:
        if request["module"]:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            status = 0
        else:
            status = main()
    except SystemExit as stop:
        status = stop.code
    except BaseException:
        traceback.print_exc()
        status = 1
    if not isinstance(status, int):
        if status is not None:
            print(status, file=sys.stderr)
        status = 0 if status is None else 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)

pending, children = b"", set()
while True:
    ready, _, _ = select.select([0], [], [], 0.05 if children else None)
    if ready:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                child(request)
            children.add(pid)
            answers.write(json.dumps({"id": request["id"], "pid": pid}) + "\n")
    for pid in list(children):
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)
            answers.write(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(wait_status)}) + "\n")
"""


def environment(**extra: str) -> dict[str, str]:
    """This process's environment with this venv's scripts on PATH, this checkout first on PYTHONPATH, and `extra`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **extra}


def _script(env: dict[str, str]) -> str:
    script = shutil.which("kstruct", path=env["PATH"])
    assert script, "the kstruct console script is not installed; run `pip install -e .`"
    return script


class _Zygote:
    """The forking process of this pytest worker for one import-time environment (started on first use,
    stopped when the worker exits)."""

    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, cwd=ROOT, bufsize=0,
        )
        self.folder = tempfile.mkdtemp(prefix="kstruct-zygote-")
        self.pids: dict[int, int] = {}
        self.statuses: dict[int, int] = {}
        self.requests = 0
        self.unread = b""
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _read(self, deadline: float | None) -> bool:
        """Takes in the zygote's next answer; False once `deadline` (time.monotonic) has passed."""
        while b"\n" not in self.unread:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.process.stdout], [], [], remaining)[0]:
                return False
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            assert chunk, "the kstruct test zygote ended unexpectedly"
            self.unread += chunk
        line, self.unread = self.unread.split(b"\n", 1)
        answer = json.loads(line)
        if "status" in answer:
            self.statuses[answer["pid"]] = answer["status"]
        else:
            self.pids[answer["id"]] = answer["pid"]
        return True

    def start(self, argv: list[str], module: str | None, env: dict[str, str], cwd: str) -> "ForkedProcess":
        self.requests += 1
        out, err = (Path(self.folder, f"{self.requests}.{name}") for name in ("stdout", "stderr"))
        out.touch()
        err.touch()
        request = {"id": self.requests, "argv": argv, "module": module, "env": env, "cwd": cwd,
                   "stdout": str(out), "stderr": str(err)}
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        deadline = time.monotonic() + 60
        while self.requests not in self.pids:
            assert self._read(deadline), "the kstruct test zygote did not fork"
        return ForkedProcess(self, argv, self.pids.pop(self.requests), out, err)

    def status(self, pid: int, deadline: float | None) -> int | None:
        while pid not in self.statuses:
            if not self._read(deadline):
                return None
        return self.statuses[pid]


class ForkedProcess:
    """A child of the zygote, with the part of `subprocess.Popen`'s interface the tests use."""

    def __init__(self, zygote: _Zygote, args: list[str], pid: int, stdout: Path, stderr: Path):
        self.zygote, self.args, self.pid = zygote, args, pid
        self.stdout_path, self.stderr_path = stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.status(self.pid, deadline=time.monotonic())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.status(self.pid, None if timeout is None else time.monotonic() + timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout_path.read_text(errors="replace"), self.stderr_path.read_text(errors="replace")

    def send_signal(self, signal: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal)

    def kill(self) -> None:
        self.send_signal(9)


_zygotes: dict[tuple, _Zygote] = {}


def spawn(argv: list[str], *, module: str | None = None, env: dict[str, str] | None = None,
          cwd: str | os.PathLike | None = None, real: bool = False) -> "ForkedProcess | subprocess.Popen":
    """Starts `argv` (the `kstruct` command, or with `module=` `python -m module argv[1:]`) in a process of
    its own, with `env` (default `environment()`) in `cwd`; stdout and stderr captured (`communicate`)."""
    env = environment() if env is None else env
    cwd = str(Path(cwd or os.getcwd()).resolve())
    if real or os.environ.get("KSTRUCT_TEST_CONSOLE") == "script":
        command = [sys.executable, "-m", module, *argv[1:]] if module else argv
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    key = tuple(env.get(name) for name in _READ_AT_IMPORT)
    zygote = _zygotes.get(key)
    if zygote is None or zygote.process.poll() is not None:
        zygote = _zygotes[key] = _Zygote(env)
    return zygote.start(list(argv), module, env, cwd)


def kstruct(*args: str, timeout: int = 600, cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
            real: bool = False) -> subprocess.CompletedProcess:
    """`kstruct ARGS...` run to its end in a process of its own (see the module's docstring), in folder `cwd`
    (default this one), with this checkout first on PYTHONPATH; `real=True`: the installed console script."""
    env = environment() if env is None else env
    argv = [_script(env), *map(str, args)]
    return _finish(spawn(argv, env=env, cwd=cwd, real=real), argv, timeout)


def python_module(module: str, *args: str, timeout: int = 600, cwd: str | os.PathLike | None = None,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS...` run to its end in a process of its own (see the module's docstring), in
    folder `cwd` (default this one), with this checkout first on PYTHONPATH."""
    argv = [module, *map(str, args)]
    return _finish(spawn(argv, module=module, env=env, cwd=cwd), argv, timeout)


def _finish(process: "ForkedProcess | subprocess.Popen", argv: list[str], timeout: int) -> subprocess.CompletedProcess:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def error_line(done: subprocess.CompletedProcess, status: int = 2) -> str:
    """The one `kstruct: error: ...` line of a failed run; fails the test on anything else on stderr."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == status, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kstruct: error: "), done.stderr  # no native log lines either
    return lines[0]
