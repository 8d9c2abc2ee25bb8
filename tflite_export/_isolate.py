"""Run a native step (TFLite conversion, a LiteRT run) in a child process.

The TFLite converter and LiteRT are C++: when one of them dies on a graph it
cannot handle (SIGSEGV in the calibrator on a WHILE loop, an abort on NaN
calibration data), it takes the whole Python process with it, and a notebook
loses all its state. In a child process the same death becomes an `ExportError`.

The child is a fresh interpreter (`sys.executable` running `_child_main`),
not `multiprocessing`'s fork or spawn: fork after TensorFlow has started its
thread pools can deadlock, and spawn re-runs the user's `__main__` script
(training included) when it lacks an `if __name__ == "__main__"` guard. The
price is a fresh import in the child. Measured on the 2-core build machine
under load: a tiny Embedding+LSTM int8 conversion took 1.2-3.0 s in-process and
24-30 s isolated, nearly all of it `import tensorflow` (22 s wall, 4.3 s CPU);
a LiteRT run imports only `ai_edge_litert` (0.5 s). So `convert` isolates only
the case known to crash (calibration through control flow) and `predict` only
on request.

A caller that converts again and again in a child (a model trained on JAX or PyTorch:
every conversion runs under TensorFlow) passes `reuse=True`: one worker process per
environment then serves request after request, so TensorFlow is imported once, not per
file (about 5 s each here). A worker that dies mid-request is an `ExportError` as before,
and the next request starts a fresh one.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from typing import Any, BinaryIO, Callable, Mapping, Sequence

from tflite_export.errors import ExportError

def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_isolated(
    function: Callable[..., Any],
    *args: Any,
    what: str,
    hint: str = "",
    env: Mapping[str, str] | None = None,
    preload: Sequence[str] = (),
    reuse: bool = False,
) -> Any:
    """Returns `function(*args)` computed in a child Python process.

    `function` must be a module-level function and `args` picklable. An exception
    raised by `function` in the child is raised again here; a child killed by a
    signal becomes an `ExportError`.

    Args:
        function: what to run, importable by `function.__module__`/`__qualname__`.
        *args: its arguments (bytes, arrays, strings: no live TensorFlow objects).
        what: the step, for the message: "The TFLite converter, converting for target='int8',".
        hint: what the user can do about it, appended to the message.
        env: variables set in the child on top of this process's environment
            (`{"KERAS_BACKEND": "tensorflow"}` to convert a model trained on JAX).
        preload: modules the child imports before it runs `function`, e.g. the
            ones that register custom Keras layers, so a `.keras` file naming
            them loads there.
        reuse: run it in this environment's long-lived worker (started on first use).

    Raises:
        ExportError: the child died (signal or exit without a result).
    """
    payload = pickle.dumps((list(sys.path), list(preload), function.__module__, function.__qualname__, args))
    if reuse:
        ok, value = _worker(env).call(payload, what, hint)
        if ok:
            return value
        raise value
    with tempfile.TemporaryDirectory(prefix="tflite_export_") as tmp:
        result_path = os.path.join(tmp, "result.pkl")
        process = subprocess.run(
            # `-c`, not `-m tflite_export._isolate`: runpy warns when the package has already imported the module.
            [sys.executable, "-c", "import sys; from tflite_export._isolate import _child_main; _child_main(sys.argv[1])", result_path],
            input=payload,
            env=None if env is None else {**os.environ, **env},
            check=False,  # stdout/stderr inherited: the converter's and LiteRT's logs show as they would in-process
        )
        if process.returncode != 0 or not os.path.isfile(result_path):
            raise _died(what, hint, process.returncode)
        with open(result_path, "rb") as f:
            ok, value = pickle.load(f)
    if ok:
        return value
    raise value


def _died(what: str, hint: str, returncode: int) -> ExportError:
    if returncode < 0:
        number = -returncode
        return ExportError(
            f"{what} crashed ({_signal_name(number)}, signal {number}) in a child process; your Python "
            f"process is unharmed. {hint}".rstrip()
        )
    return ExportError(f"{what} failed in a child process (exit code {returncode}; its log is above). {hint}".rstrip())


_HEADER = struct.Struct("<Q")  # the byte length of one pickled message


def _send(stream: BinaryIO, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes | None:
    """One message, or None at the end of the stream (the other side is gone)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


class _Worker:
    """A child process that runs request after request, over two pipes of its own (its stdout and
    stderr stay the user's, so the converter's log shows as it would in-process)."""

    def __init__(self, env: Mapping[str, str] | None):
        self.key = _worker_key(env)
        to_child_read, to_child_write = os.pipe()
        from_child_read, from_child_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tflite_export._isolate import _worker_main; "
             "_worker_main(int(sys.argv[1]), int(sys.argv[2]))", str(to_child_read), str(from_child_write)],
            pass_fds=(to_child_read, from_child_write),
            env=None if env is None else {**os.environ, **env},
        )
        os.close(to_child_read)
        os.close(from_child_write)
        self.requests = os.fdopen(to_child_write, "wb")
        self.results = os.fdopen(from_child_read, "rb")
        self.lock = threading.Lock()

    def call(self, payload: bytes, what: str, hint: str) -> tuple[bool, Any]:
        with self.lock:
            try:
                _send(self.requests, payload)
                answer = _receive(self.results)
            except (BrokenPipeError, OSError):
                answer = None
            if answer is None:  # the worker died: report how, and let the next request start a new one
                self.close()
                raise _died(what, hint, self.process.wait())
            return pickle.loads(answer)

    def close(self) -> None:
        for stream in (self.requests, self.results):
            try:
                stream.close()
            except OSError:
                pass
        if _WORKERS.get(self.key) is self:
            del _WORKERS[self.key]


_WORKERS: dict[tuple, _Worker] = {}
_WORKERS_LOCK = threading.Lock()


def _worker_key(env: Mapping[str, str] | None) -> tuple:
    return tuple(sorted((env or {}).items()))


def _worker(env: Mapping[str, str] | None) -> _Worker:
    with _WORKERS_LOCK:
        worker = _WORKERS.get(_worker_key(env))
        if worker is None or worker.process.poll() is not None:
            worker = _Worker(env)
            _WORKERS[worker.key] = worker
        return worker


@atexit.register
def _stop_workers() -> None:
    """Closing a worker's request pipe ends its loop; it exits on its own."""
    for worker in list(_WORKERS.values()):
        worker.close()
        try:
            worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.process.kill()


def _run_request(payload: bytes) -> tuple[bool, Any]:
    path, preload, module, qualname, args = pickle.loads(payload)
    sys.path[:] = path
    try:
        for name in preload:
            importlib.import_module(name)
        function = importlib.import_module(module)
        for name in qualname.split("."):
            function = getattr(function, name)
        outcome = (True, function(*args))
    except Exception as error:  # sent back whole, raised again in the parent
        try:
            pickle.loads(pickle.dumps(error))  # some exceptions pickle but cannot be rebuilt
        except Exception:
            error = ExportError(f"{type(error).__name__}: {error}")
        outcome = (False, error)
    return outcome


def _child_main(result_path: str) -> None:
    outcome = _run_request(sys.stdin.buffer.read())
    with open(result_path, "wb") as f:
        pickle.dump(outcome, f)


def _worker_main(requests_fd: int, results_fd: int) -> None:
    """The worker's loop: one request in, one pickled `(ok, value)` out, until the parent closes the pipe."""
    with os.fdopen(requests_fd, "rb") as requests, os.fdopen(results_fd, "wb") as results:
        while (payload := _receive(requests)) is not None:
            _send(results, pickle.dumps(_run_request(payload)))
            if "keras" in sys.modules:  # free the model just converted (graphs, names) before the next
                sys.modules["keras"].backend.clear_session()
