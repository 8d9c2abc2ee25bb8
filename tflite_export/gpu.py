"""`run_on_gpu`: does a file really run on LiteRT's GPU accelerator, and give the CPU's answers?

An op table cannot say: the accelerator refuses files TF's Analyzer calls compatible
(dynamic batch), and accepts files it then computes wrongly (TOPK_V2 over a last dimension
that is not a multiple of 4) or that kill the process (CUMSUM: SIGILL). So the file is RUN,
GPU only and fp32, in a child process (`gpu_runner.py`, numpy + ai_edge_litert only), and its
outputs are compared with the CPU accelerator's on the same random inputs.

Needs a Vulkan device. Without a GPU, Mesa's lavapipe gives one made of CPU
(`scripts/install-lavapipe.sh`); its timings mean nothing for speed, and the verdict says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
from typing import Any

from tflite_export import runtime
from tflite_export.errors import CompatibilityError, ExportError

STATUSES = ("accelerated", "not_accelerated", "wrong_output", "crashed", "no_device", "timed_out", "error")
RUNNER = pathlib.Path(__file__).with_name("gpu_runner.py")
LAVAPIPE_ICD = "/usr/share/vulkan/icd.d/lvp_icd.json"
_VENDOR_ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/nvidia/share/vulkan/icd.d")
_INSTALL_HINT = "install a Vulkan driver (no GPU: `sudo scripts/install-lavapipe.sh` gives a software one, Mesa >= 25)"

_ADAPTER = re.compile(r"Selected adapter: (?P<name>.*?), arch=(?P<arch>[^,]*),.*adapterType=(?P<type>.*)$", re.M)
_UNSUPPORTED_BLOCK = re.compile(r"Following operations are not supported by GPU delegate:\n(?P<body>(?:.*\n)*?)(?:No operations|\d+ operations will run)")
_OP_LINE = re.compile(r"^([A-Z][A-Z0-9_]*): (.+)$", re.M)
_BUILDER_WARNING = re.compile(r"gpu_model_builder\.cc:\d+\] (.+)$", re.M)
_NO_ADAPTER = ("No adapters found", "Failed to initialize WebGPU environment")


@dataclasses.dataclass
class GpuVerdict:
    """What running a file on LiteRT's GPU accelerator showed.

    Attributes:
        status: one of `STATUSES`: "accelerated" (every op on the GPU, outputs equal to the
            CPU's within tolerance), "not_accelerated" (refused, or ops left on the CPU),
            "wrong_output", "crashed" (the child was killed by a signal), "no_device" (no
            Vulkan adapter), "timed_out", "error" (anything else; see `message`).
        message: one line with the evidence.
        device: the Vulkan adapter LiteRT selected, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
        software: whether that adapter is a CPU (lavapipe): its latency means nothing for speed.
        fully_accelerated: LiteRT's own claim, when the file compiled.
        max_abs_diff: largest |GPU - CPU| over all outputs, when both ran; `largest_output`
            is the largest |CPU output|, the scale `tolerance` is relative to.
        unsupported_ops: ops the accelerator refused, from its log (or, when the log names
            none, the ops that make shapes dynamic).
        runtime_warnings: what LiteRT's GPU graph builder logged (e.g. the TopK warning).
        signal: the signal name for "crashed", e.g. "SIGILL"; `stage` says where it died.
        gpu_ms / cpu_ms / load_ms: median run and GPU compile time in milliseconds.
    """

    status: str
    message: str
    device: str | None = None
    software: bool | None = None
    fully_accelerated: bool | None = None
    max_abs_diff: float | None = None
    largest_output: float | None = None
    tolerance: float | None = None
    unsupported_ops: list[str] = dataclasses.field(default_factory=list)
    runtime_warnings: list[str] = dataclasses.field(default_factory=list)
    signal: str | None = None
    stage: str | None = None
    gpu_ms: float | None = None
    cpu_ms: float | None = None
    load_ms: float | None = None
    gpu_times_ms: list[float] = dataclasses.field(default_factory=list, repr=False)
    log: str = dataclasses.field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "accelerated"

    @property
    def ran(self) -> bool:
        """False when the check could not run (no device): nothing is known about the file."""
        return self.status != "no_device"

    def raise_for_failure(self) -> GpuVerdict:
        """Raises `CompatibilityError` (naming the ops) when the check ran and the file failed.

        "no_device" passes: nothing is known, and the caller records `message` instead.
        """
        if self.ran and not self.ok:
            raise CompatibilityError(
                f"The file does not run correctly on LiteRT's GPU accelerator: {self.message}",
                target="gpu",
                ops=tuple(self.unsupported_ops),
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The verdict without the raw log and per-run times, for reports."""
        d = dataclasses.asdict(self)
        d.pop("log")
        d.pop("gpu_times_ms")
        return d


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: points Vulkan at lavapipe when nothing else is chosen.

    A user need not export VK_DRIVER_FILES: when it is unset, lavapipe is installed and no
    NVIDIA ICD is present, the child gets lavapipe's. An NVIDIA ICD is left to the loader.
    """
    env = dict(os.environ if base is None else base)
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # the adapter and the refused ops are logged at INFO and ERROR
    if "VK_DRIVER_FILES" in env or "VK_ICD_FILENAMES" in env or not os.path.isfile(LAVAPIPE_ICD):
        return env
    if any(pathlib.Path(d, "nvidia_icd.json").is_file() for d in _VENDOR_ICD_DIRS):
        return env
    env["VK_DRIVER_FILES"] = LAVAPIPE_ICD
    return env


def _median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def _records(stdout: str) -> list[dict[str, Any]]:
    from tflite_export.gpu_runner import MARK

    return [json.loads(line[len(MARK):]) for line in stdout.splitlines() if line.startswith(MARK)]


def _unsupported_from_log(log: str) -> dict[str, str]:
    """{op: the accelerator's reason}, from its "not supported by GPU delegate" block."""
    block = _UNSUPPORTED_BLOCK.search(log)
    return {op: why.strip().rstrip(".") for op, why in _OP_LINE.findall(block["body"])} if block else {}


def _named(reasons: dict[str, str]) -> str:
    return ", ".join(f"{op} ({why})" for op, why in reasons.items())


def _dynamic_ops(blob: bytes) -> list[str]:
    """The ops behind "dynamic-sized tensors", from the static check (no TensorFlow needed)."""
    from tflite_export.analyze import analyze
    from tflite_export.check import check

    try:  # without TF's analyzer: the parent stays free of TensorFlow
        return check(analyze(blob, gpu_analyzer=False), "gpu").unsupported_ops
    except ExportError:
        return []


def _on(v: GpuVerdict) -> str:
    return f" on {v.device}{' (software Vulkan)' if v.software else ''}" if v.device else ""


def _judge(v: GpuVerdict, result: dict[str, Any] | None, blob: bytes, tolerance: float) -> GpuVerdict:
    if result is None:
        v.status, v.message = "error", f"the GPU runner stopped at stage {v.stage!r} without a result: {_last_line(v.log)}"
        return v
    if not result["compiled"]:
        if any(s in v.log or s in result["error"] for s in _NO_ADAPTER):
            vulkan = re.search(r"vkCreateInstance failed with \w+|No adapters found", v.log)
            v.status = "no_device"
            v.message = f"no Vulkan device: LiteRT's GPU accelerator found no adapter ({vulkan[0] if vulkan else result['error']}); {_INSTALL_HINT}"
            return v
        reasons = _unsupported_from_log(v.log)
        v.unsupported_ops = list(reasons)
        reason = result["error"].split("└")[-1].strip()
        if not reasons and "dynamic-sized tensor" in v.log:
            v.unsupported_ops = _dynamic_ops(blob)
            reason = f"dynamic-sized tensors (from {', '.join(v.unsupported_ops) or 'see log'}): {reason}"
        elif reasons:
            reason = f"{_named(reasons)}: {reason}"
        v.status, v.message = "not_accelerated", f"refused by the GPU accelerator{_on(v)}: {reason}"
        return v
    v.fully_accelerated = result["fully_accelerated"]
    v.max_abs_diff = result["max_abs_diff"]
    v.gpu_ms, v.cpu_ms = _median(result["gpu_times_ms"]), _median(result["cpu_times_ms"])
    v.load_ms, v.gpu_times_ms = result["load_ms"], result["gpu_times_ms"]
    # Integer outputs may differ by a quantization step (the GPU computes in float).
    # Relative to the largest CPU output: an untrained net's logits can be ~1e-10 in all.
    scale = v.largest_output = result["output_scale"]
    v.tolerance = 1.0 if result["integer_outputs"] else tolerance * (scale if scale > 0 else 1.0)
    warned = f"; LiteRT warned: {' '.join(v.runtime_warnings)}" if v.runtime_warnings else ""
    if not v.fully_accelerated:
        reasons = _unsupported_from_log(v.log)
        v.unsupported_ops = list(reasons)
        v.status = "not_accelerated"
        v.message = f"partly on the CPU{_on(v)}: {_named(reasons) or 'ops not named in the log'}"
    elif v.max_abs_diff > v.tolerance:
        v.status = "wrong_output"
        v.message = (
            f"reported fully accelerated{_on(v)} but the outputs differ from the CPU's by up to {v.max_abs_diff:.4g} "
            f"(tolerance {v.tolerance:.2g}; output {result['worst_output']}: CPU {_fmt(result['cpu_values'])}, "
            f"GPU {_fmt(result['gpu_values'])}){warned}"
        )
    else:
        v.status = "accelerated"
        vacuous = "; every output is 0, so the comparison proves little" if scale == 0 else ""
        v.message = (
            f"fully accelerated{_on(v)}; outputs equal to the CPU's (max abs diff {v.max_abs_diff:.3g}, "
            f"largest output {scale:.3g}){vacuous}{warned}"
        )
    return v


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{x:.4g}" for x in values) + "]"


def _last_line(log: str) -> str:
    """The child's Python exception if it raised one, else its last log line."""
    errors = [" ".join(e.split()) for e in re.findall(r"^\w+(?:Error|Exception): .*(?:\n└.*)?", log, re.M)]
    lines = [line for line in log.splitlines() if line.strip()]
    return errors[-1].strip() if errors else lines[-1].strip() if lines else "no output"


def run_on_gpu(
    model: bytes | str | os.PathLike,
    *,
    runs: int = 5,
    warmup: int = 1,
    threads: int = 1,
    tolerance: float = 1e-4,
    allow_cpu_fallback: bool = False,
    timeout: float = 300.0,
) -> GpuVerdict:
    """Runs a TFLite file on LiteRT's GPU accelerator in a subprocess and compares it with the CPU.

    GPU only (a file that needs the CPU for some op is refused, and the ops are named) and
    fp32 enforced. Both accelerators get the same seeded random inputs. The caller's process
    never loads the GPU accelerator, so a crash costs a verdict, not the process.

    Args:
        model: TFLite bytes or a path.
        runs / warmup: timed and untimed invocations on each accelerator.
        threads: CPU threads for the CPU accelerator.
        tolerance: float outputs pass when max |GPU - CPU| <= tolerance * max |CPU| (relative
            to the largest output: fp32 on another device differs by rounding, ~1e-6).
            Integer outputs pass within one quantization step.
        allow_cpu_fallback: let ops the GPU lacks run on the CPU (a partial delegate); the
            verdict is still "not_accelerated" when any op did.
        timeout: seconds before the child is killed ("timed_out").

    Returns:
        A `GpuVerdict`; it never raises for what the file does on the GPU.

    Raises:
        ExportError: bad arguments or not a TFLite file.
    """
    for name, value, low in (("runs", runs, 1), ("warmup", warmup, 0), ("threads", threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ExportError(f"Expected `{name}` to be an int >= {low}. Received: {name}={value!r}")
    if not tolerance > 0:
        raise ExportError(f"Expected `tolerance` > 0. Received: tolerance={tolerance!r}")
    blob = runtime.read_model(model)
    with tempfile.TemporaryDirectory(prefix="kstruct-gpu-") as folder:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as f:
            f.write(blob)
        command = [sys.executable, str(RUNNER), path, f"--runs={runs}", f"--warmup={warmup}", f"--threads={threads}"]
        if allow_cpu_fallback:
            command.append("--fallback")
        try:
            child = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=timeout)
        except subprocess.TimeoutExpired as e:
            log = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            return GpuVerdict("timed_out", f"the GPU runner did not finish in {timeout:g} s and was killed", log=log)
    log = child.stderr + "\n" + "\n".join(line for line in child.stdout.splitlines() if not line.startswith("@@"))
    records = _records(child.stdout)
    stages = [r["stage"] for r in records if "stage" in r]
    result = next((r["result"] for r in records if "result" in r), None)
    v = GpuVerdict("error", "", stage=stages[-1] if stages else None, log=log)
    adapter = _ADAPTER.search(log)
    if adapter:
        v.device = adapter["name"]
        v.software = adapter["arch"] == "software" or "Software" in adapter["type"]
    v.runtime_warnings = list(dict.fromkeys(_BUILDER_WARNING.findall(log)))
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        v.status, v.signal = "crashed", name
        v.message = f"the GPU runner was killed by {name} at stage {v.stage!r}{_on(v)} (your process would have been)"
        return v
    if child.returncode != 0:
        v.message = f"the GPU runner failed at stage {v.stage!r} (exit {child.returncode}): {_last_line(child.stderr)}"
        return v
    return _judge(v, result, blob, tolerance)
