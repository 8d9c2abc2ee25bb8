"""The `kstruct` command: argument parsing only; the work is done by the library.

One module per subcommand (`optimize`, `demo`, `export`, `inspect`, `bench`,
`search`), each with `add_parser(subparsers)`, which sets `run=`, and `run(args)`.
`main` is the one error-to-exit path: every `UsageError`, `KstructError` and
`tflite_export.ExportError` ends as one line `kstruct: error: ...` on stderr and
exit status 2 (1 for a search that found nothing within budget), never a traceback.
Ctrl-C ends with one line and status 130 (128 + SIGINT, as shells report it), so a
script can tell an interrupted run from bad input.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import sys
import threading

from kstruct.cli import bench, demo, export, inspect, optimize, search
from kstruct.cli._usage import NothingFound, Parser, UsageError
from kstruct.outputs import OutputExistsError

__all__ = ["main", "build_parser", "UsageError", "NothingFound"]

SUBCOMMANDS = (optimize, demo, export, inspect, bench, search)
INTERRUPTED = 130  # 128 + SIGINT


def build_parser() -> Parser:
    """The full `kstruct` parser; cheap to build (no TensorFlow import)."""
    parser = Parser(prog="kstruct", description="Shrink Keras 3 models and ship them as TFLite.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def fail(message: str, status: int = 2) -> int:
    """Prints the one error line and returns the exit status."""
    line = " ".join(part.strip() for part in message.strip().splitlines() if part.strip())
    print(f"kstruct: error: {line}", file=sys.stderr)
    return status


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silences what native libraries write to file descriptor 2 (TensorFlow's log lines) for the block.

    TensorFlow 2.21 prints them whatever TF_CPP_MIN_LOG_LEVEL says (start-up lines, a
    cuInit error on machines without CUDA), which would bury the one-line errors this
    command promises. Python's own writes (warnings, our error line, a traceback from a
    bug) still reach the terminal through a copy of the descriptor. TF_CPP_MIN_LOG_LEVEL=0
    keeps TensorFlow's lines, for debugging.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    try:
        terminal = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # already captured (pytest, a notebook): leave it be
        terminal = False
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        if terminal:
            sys.stderr = open(os.dup(saved), "w", buffering=1, errors="backslashreplace")
        yield
    finally:
        if sys.stderr is not python_stderr:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input, from kstruct and from tflite_export (imported after parsing)."""
    from tflite_export import ExportError

    from kstruct.errors import KstructError

    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0":
        # TensorFlow's Python logger warns about tf.function retracing each time a new stage's
        # model predicts: expected here (every stage is a new model), and nothing a user can act on.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)

    return (UsageError, KstructError, ExportError)


@contextlib.contextmanager
def _interrupts_delivered():
    """A Ctrl-C that lands in a finalizer or a garbage-collector callback (a TensorFlow object's `__del__`,
    JAX's gc callback) is one CPython prints as "Exception ignored in ..." with a traceback, then drops,
    and the run goes on. While this is active such an interrupt is raised again in the main thread,
    outside the finalizer: one Ctrl-C stops the run, with one line. (From another thread, a moment
    later: raised from the hook itself, in the main thread, it would be dropped the same way.)"""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            again = threading.Timer(0.01, _thread.interrupt_main)
            again.daemon = True
            again.start()
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kstruct` console script; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = build_parser().parse_args(argv)  # --help and argument errors never load TensorFlow
    except UsageError as err:
        return fail(str(err), err.exit_status)
    except KeyboardInterrupt:
        return fail("interrupted", INTERRUPTED)
    try:  # outside the quiet block, so the line is printed once stderr is restored
        with _interrupts_delivered(), _quiet_native_stderr():
            expected = _expected_errors()  # loads TensorFlow once (Ctrl-C may land in it)
            try:
                return args.run(args)
            except OutputExistsError as err:  # the library names overwrite=True; here the flag is --overwrite
                return fail(str(err.with_flag("--overwrite")))
            except expected as err:
                return fail(str(err) or type(err).__name__, getattr(err, "exit_status", 2))
    except KeyboardInterrupt:
        return fail(getattr(args, "interrupted", "interrupted"), INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
