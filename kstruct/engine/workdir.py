"""A step's working folder: the one the user named, kept; or a temporary one, removed when the step ends.

`auto` and `search` keep Keras Tuner's project there: every trial's model and TFLite file. In a folder
the user named, that is what lets a search resume. In one they did not name, nothing can resume it, and
each run would leave its trials behind in the temporary folder (for a MobileNetV2, hundreds of MB per run).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def working_directory(directory: str | None, prefix: str) -> Iterator[str]:
    """Yields `directory`, or a new temporary folder named `prefix...` that is removed on the way out,
    whether the step succeeded or raised."""
    if directory is not None:
        yield directory
        return
    temporary = tempfile.mkdtemp(prefix=prefix)
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
