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
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

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

    Raises:
        ExportError: the child died (signal or exit without a result).
    """
    payload = pickle.dumps((list(sys.path), list(preload), function.__module__, function.__qualname__, args))
    with tempfile.TemporaryDirectory(prefix="tflite_export_") as tmp:
        result_path = os.path.join(tmp, "result.pkl")
        process = subprocess.run(
            # `-c`, not `-m tflite_export._isolate`: runpy warns when the package has already imported the module.
            [sys.executable, "-c", "import sys; from tflite_export._isolate import _child_main; _child_main(sys.argv[1])", result_path],
            input=payload,
            env=None if env is None else {**os.environ, **env},
            check=False,  # stdout/stderr inherited: the converter's and LiteRT's logs show as they would in-process
        )
        if process.returncode < 0:
            number = -process.returncode
            raise ExportError(
                f"{what} crashed ({_signal_name(number)}, signal {number}) in a child process; your Python "
                f"process is unharmed. {hint}".rstrip()
            )
        if process.returncode != 0 or not os.path.isfile(result_path):
            raise ExportError(
                f"{what} failed in a child process (exit code {process.returncode}; its log is above). {hint}".rstrip()
            )
        with open(result_path, "rb") as f:
            ok, value = pickle.load(f)
    if ok:
        return value
    raise value


def _child_main(result_path: str) -> None:
    path, preload, module, qualname, args = pickle.loads(sys.stdin.buffer.read())
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
    with open(result_path, "wb") as f:
        pickle.dump(outcome, f)
