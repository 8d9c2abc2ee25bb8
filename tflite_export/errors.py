"""The errors `tflite_export` raises, so callers can catch ours and only ours."""

from __future__ import annotations


class ExportError(ValueError):
    """Bad input to an export function, or a file that cannot serve its target.

    A subclass of `ValueError`: every case is a value the caller passed (a model,
    a target name, calibration data, a file) that cannot be used as given.
    """


class CompatibilityError(ExportError):
    """The converted file contains ops or shapes its target cannot run.

    Attributes:
        target: the target name, e.g. `"gpu"`.
        ops: the op names at fault, in graph order, without duplicates.
    """

    def __init__(self, message: str, *, target: str, ops: tuple[str, ...] = ()):
        super().__init__(message)
        self.target = target
        self.ops = tuple(ops)


class EdgeTpuCpuFallbackWarning(UserWarning):
    """Part of an Edge TPU graph would stay on the CPU (see `check(..., "edgetpu")`)."""
