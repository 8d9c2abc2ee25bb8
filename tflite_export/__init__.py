"""tflite_export: Keras to TFLite for named targets, verified on the LiteRT runtime.

This package never imports kstruct: it can be used on any Keras 3 model. Only
`convert` needs TensorFlow (and the Keras TensorFlow backend); `predict`,
`evaluate`, `analyze`, `check`, `benchmark` and `run_on_gpu` need only `ai-edge-litert`.

Example:

>>> import tflite_export as te  # doctest: +SKIP
>>> blob = te.convert(model, "int8", representative_data=x_train[:200])  # doctest: +SKIP
>>> te.verify(blob, model, x_test, y_test).top1_agreement  # doctest: +SKIP
"""

from tflite_export.analyze import Analysis, TensorInfo, analyze
from tflite_export.benchmark import BenchmarkResult, benchmark
from tflite_export.check import TargetCheck, check
from tflite_export.convert import convert
from tflite_export.errors import CompatibilityError, EdgeTpuCpuFallbackWarning, ExportError
from tflite_export.evaluate import evaluate
from tflite_export.gpu import GpuVerdict, run_on_gpu
from tflite_export.precision import float32_twin
from tflite_export.runtime import predict, read_model
from tflite_export.targets import TARGET_TABLE, TARGETS, Target
from tflite_export.verify import OutputDiff, Verification, paired_outputs, verify
from tflite_export.weights import WeightTensor, quantized_weights

__all__ = [
    "TARGETS",
    "TARGET_TABLE",
    "Target",
    "convert",
    "float32_twin",
    "predict",
    "evaluate",
    "analyze",
    "Analysis",
    "TensorInfo",
    "check",
    "TargetCheck",
    "verify",
    "Verification",
    "OutputDiff",
    "paired_outputs",
    "benchmark",
    "BenchmarkResult",
    "run_on_gpu",
    "GpuVerdict",
    "read_model",
    "quantized_weights",
    "WeightTensor",
    "ExportError",
    "CompatibilityError",
    "EdgeTpuCpuFallbackWarning",
]
