"""Quantization-aware training for Keras 3 that converts to exact full-int8 TFLite files."""

from kstruct.quantization.bn_folding import folded_bias, folded_scale
from kstruct.quantization.layers import (
    FloatPassthrough,
    QuantizeActivation,
    QuantizeOutput,
    QuantizeRescaling,
    QuantizeWrapper,
)
from kstruct.quantization.quantize import quantize
from kstruct.quantization.quantizers import FakeQuant, quantize_weight
from kstruct.quantization.report import QuantizationReport, quantization_report
from kstruct.quantization.scheme import QuantizationScheme
from kstruct.quantization.step import PTQ, QAT

__all__ = [
    "FakeQuant",
    "PTQ",
    "QAT",
    "FloatPassthrough",
    "QuantizationReport",
    "QuantizationScheme",
    "QuantizeActivation",
    "QuantizeOutput",
    "QuantizeRescaling",
    "QuantizeWrapper",
    "folded_bias",
    "folded_scale",
    "quantization_report",
    "quantize",
    "quantize_weight",
]
