"""The quantization report: which layers became int8, how, and which stayed float and why."""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from kstruct.quantization.layers import (
    FloatPassthrough,
    QuantizeActivation,
    QuantizeOutput,
    QuantizeRescaling,
    QuantizeWrapper,
)
from kstruct.quantization.quantizers import FakeQuant


@dataclass
class LayerEntry:
    """One original layer: its name, type, and what became of it."""

    name: str
    layer_type: str
    detail: str


@dataclass
class QuantizationReport:
    """Layers quantized to int8 (with how) and layers left in float (with why)."""

    quantized: list[LayerEntry] = field(default_factory=list)
    skipped: list[LayerEntry] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "quantized": {e.name: f"{e.layer_type}: {e.detail}" for e in self.quantized},
            "skipped": {e.name: f"{e.layer_type}: {e.detail}" for e in self.skipped},
        }

    def __str__(self) -> str:
        lines = [f"{'layer':<32} {'type':<24} int8"]
        for entry in self.quantized:
            lines.append(f"{entry.name:<32} {entry.layer_type:<24} {entry.detail}")
        for entry in self.skipped:
            lines.append(f"{entry.name:<32} {entry.layer_type:<24} SKIPPED (float): {entry.detail}")
        return "\n".join(lines)


def _weighted_detail(wrapper: QuantizeWrapper) -> str:
    parts = []
    for name, axis in wrapper.quantized_kernels.items():
        parts.append(f"{name} {'per-channel' if axis is not None else 'per-tensor'}")
    if wrapper.batch_norm is not None:
        parts.append(f"folded {wrapper.batch_norm.name}")
    if wrapper.activation is not None:
        how = "fused" if wrapper._activation_spec.fusable else ("float" if wrapper.float_activation else "quantized")
        parts.append(f"{how} {wrapper.activation_kind} ({wrapper.activation.name})")
    return ", ".join(parts)


def _entries(model: keras.Model, report: QuantizationReport) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _entries(layer, report)
        elif isinstance(layer, FloatPassthrough):
            report.skipped.append(LayerEntry(layer.layer.name, type(layer.layer).__name__, layer.reason))
        elif isinstance(layer, QuantizeWrapper):
            report.quantized.append(LayerEntry(layer.layer.name, type(layer.layer).__name__, _weighted_detail(layer)))
            if layer.float_activation:
                report.skipped.append(
                    LayerEntry(
                        layer.activation.name,
                        "Activation",
                        f"activation {layer.activation_kind!r} is not int8-native: QAT keeps it in float between the int8 output of {layer.layer.name} "
                        "and a requantized output (the converter may split it into int8 ops it calibrates)",
                    )
                )
        elif isinstance(layer, QuantizeOutput):
            fused = f", fused {layer.activation_kind} ({layer.activation.name})" if layer.activation is not None else ""
            report.quantized.append(LayerEntry(layer.layer.name, type(layer.layer).__name__, "output range" + fused))
        elif isinstance(layer, QuantizeActivation):
            report.quantized.append(LayerEntry(layer.layer.name, type(layer.layer).__name__, f"{layer.activation_kind} output range"))
        elif isinstance(layer, QuantizeRescaling):
            report.quantized.append(LayerEntry(layer.layer.name, "Rescaling", "as a 1x1 depthwise convolution"))
        elif isinstance(layer, FakeQuant):
            report.quantized.append(LayerEntry(layer.name, "FakeQuant", "input range"))
        elif not isinstance(layer, keras.layers.InputLayer):
            report.quantized.append(LayerEntry(layer.name, type(layer).__name__, "keeps its input's scale"))


def quantization_report(model: keras.Model) -> QuantizationReport:
    """What `quantize` did to each layer of a QAT model (also after saving and loading it)."""
    report = QuantizationReport()
    _entries(model, report)
    return report
