"""The CLI's own errors and argument types, shared by every subcommand module.

Kept apart from `kstruct/cli/__init__.py` so subcommand modules can import them
without importing the package that imports them (no cycle).
"""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """Bad command-line input; its message is printed as the one error line, exit status 2."""

    exit_status = 2


class NothingFound(UsageError):
    """The command ran, but found nothing to hand back (a search in which no trial met the budget)."""

    exit_status = 1


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors go through `main`'s one error line instead of a usage dump."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


MAX_COUNT = 2**31 - 1  # kstruct.engine.arguments.MAX_COUNT, repeated here so parsing never imports TensorFlow


def positive_int(text: str) -> int:
    """argparse type for counts such as --batch-size and --epochs: 0 is refused here, not deep in training,
    and so is a count too big for TensorFlow (an OverflowError from inside it)."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {shown!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {shown}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a positive integer of at most {MAX_COUNT}. Received: {shown}")
    return value
