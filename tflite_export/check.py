"""Does a converted file suit its target? One check per target with a restricted runtime.

`check(blob, target)` returns a `TargetCheck`; `convert` calls it and raises (gpu,
micro) or warns (edgetpu, unless `strict=True`) when the check fails.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from tflite_export.analyze import Analysis, analyze
from tflite_export import targets as targets_lib
from tflite_export.errors import ExportError

_INTEGER_DTYPES = ("int8", "uint8", "int32")


@dataclasses.dataclass
class TargetCheck:
    """The verdict of `check`.

    Attributes:
        target: the target name.
        ok: whether the file passes.
        problems: one line per problem (op, dtype or shape), in graph order.
        unsupported_ops: op names outside the target's op table, graph order, unique.
        cpu_ops: for edgetpu, `"#index NAME"` of every op that would stay on the CPU
            (from the first unsupported op to the end of the graph).
    """

    target: str
    ok: bool
    problems: list[str]
    unsupported_ops: list[str]
    cpu_ops: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _unique(names) -> list[str]:
    return list(dict.fromkeys(names))


def _integer_problems(a: Analysis) -> list[str]:
    bad = [f"{name} is {dtype}" for name, dtype in a.tensors_not_int8_int32 if dtype not in _INTEGER_DTYPES]
    return [f"{len(bad)} tensors are not 8-bit integer, e.g. {bad[0]}"] if bad else []


def _static_problems(a: Analysis) -> list[str]:
    if not a.has_dynamic_shape_ops:
        return []
    return ["dynamic shapes: " + ", ".join(a.dynamic_tensors[:3] or sorted(
        set(a.ops) & targets_lib.DYNAMIC_SHAPE_OPS))]


def _check_gpu(a: Analysis) -> TargetCheck:
    unsupported = _unique(op for op in a.ops if op not in targets_lib.GPU_OPS and op not in targets_lib.GPU_CUSTOM_OPS)
    dynamic_ops = _unique(op for op in a.ops if op in targets_lib.DYNAMIC_SHAPE_OPS)
    # The table passes these, a run does not: follow the run (see targets.GPU_OPS_FAILING_AT_RUN).
    failing = _unique(op for op in a.ops if op in targets_lib.GPU_OPS_FAILING_AT_RUN)
    problems = list(a.gpu_problems) + [
        f"op {op} is on the GPU delegate's op table but fails when run: {targets_lib.GPU_OPS_FAILING_AT_RUN[op]}"
        for op in failing
    ]
    return TargetCheck("gpu", not problems, problems, _unique(unsupported + dynamic_ops + failing))


def _check_edgetpu(a: Analysis) -> TargetCheck:
    unsupported = [(i, op) for i, op in enumerate(a.ops) if op not in targets_lib.EDGETPU_OPS]
    problems = _integer_problems(a) + _static_problems(a)
    cpu_ops: list[str] = []
    if unsupported:
        first = unsupported[0][0]
        cpu_ops = [f"#{i} {op}" for i, op in enumerate(a.ops) if i >= first]
        problems.append(
            f"not on the Edge TPU op list: {', '.join(_unique(op for _, op in unsupported))}; "
            f"edgetpu_compiler stops mapping at op #{first} {a.ops[first]}, so {len(cpu_ops)} of "
            f"{len(a.ops)} ops would run on the CPU: {', '.join(cpu_ops)}"
        )
    return TargetCheck("edgetpu", not problems, problems, _unique(op for _, op in unsupported), cpu_ops)


def _check_micro(a: Analysis) -> TargetCheck:
    unsupported = _unique(op for op in a.ops if op not in targets_lib.MICRO_OPS)
    problems = _static_problems(a) + _integer_problems(a)
    if unsupported:
        problems.append(
            f"ops TFLite Micro does not implement ({targets_lib.MICRO_OPS_SOURCE}): {', '.join(unsupported)}"
        )
    return TargetCheck("micro", not problems, problems, unsupported)


def _check_none(target: str) -> Callable[[Analysis], TargetCheck]:
    return lambda a: TargetCheck(target, True, [], [])


_CHECKS = {"gpu": _check_gpu, "edgetpu": _check_edgetpu, "micro": _check_micro}


def check(model: bytes | str | os.PathLike | Analysis, target: str) -> TargetCheck:
    """Checks a TFLite file against the restrictions of `target`.

    gpu: no dynamic shapes, only ops in `targets.GPU_OPS`, no analyzer warning, none of
        `targets.GPU_OPS_FAILING_AT_RUN` (on the table, but measured to fail when run). A
        fast first pass: `run_on_gpu(blob)` is the authority where a Vulkan device exists.
    edgetpu: 8-bit tensors, static shapes, ops from the Edge TPU list; reports the
        ops that would stay on the CPU. micro: static shapes, 8-bit tensors, only
        ops TFLite Micro implements. Other targets have nothing to check.

    Args:
        model: TFLite bytes, a path, or an `Analysis` already made.
        target: one of `TARGETS`.

    Raises:
        ExportError: unknown target or not a TFLite file.
    """
    spec = targets_lib.get_target(target)
    a = model if isinstance(model, Analysis) else analyze(model, gzip_size=False)  # ops only
    return _CHECKS.get(spec.op_check, _check_none(target))(a)


def describe_failure(result: TargetCheck) -> str:
    """One message for an exception or warning."""
    if not result.problems:
        raise ExportError("describe_failure() needs a failed check")
    return f"The converted file does not suit target={result.target!r}: " + "; ".join(result.problems)
