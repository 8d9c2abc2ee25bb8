"""The library's messages: `logging.getLogger("kstruct")`, shown when a call's `verbose` asks.

Why a logger and not `print`: an application decides where library messages go, by giving the
"kstruct" logger handlers of its own (or a level above INFO to silence it). When it has given it
none, a `verbose` call shows its lines on stdout, as Keras's progress bar does.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("kstruct")


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at each message (pytest and notebooks swap it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


_HANDLER = _CurrentStdout()


def say(message: str, verbose) -> None:
    """Logs `message` at INFO when `verbose`; on stdout unless the "kstruct" logger has handlers."""
    if not verbose:
        return
    if not logger.handlers:
        logger.addHandler(_HANDLER)
        logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.info(message)
