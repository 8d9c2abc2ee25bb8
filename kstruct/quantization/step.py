"""The `qat` and `ptq` strategy steps: int8 by training with fake quantization, or by calibration."""

from __future__ import annotations

import keras
import numpy as np

from kstruct.quantization.quantize import quantize
from kstruct.quantization.report import quantization_report
from kstruct.step import Step, StepResult
from kstruct.training import StepContext

INT8_TARGET = "int8"
# The full-integer targets (tflite_export rows with quantize="int8"); tests check the two agree.
INTEGER_TARGETS = ("int8", "edgetpu", "micro")


def _keras_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    predictions = np.asarray(model.predict(x, verbose=0))
    labels = np.asarray(y)
    if labels.ndim > 1:
        labels = labels.argmax(-1)
    return float(np.mean(predictions.argmax(-1) == labels.reshape(-1)))


def _integer_target(context: StepContext, target: str | None) -> str:
    """The step's own target, else the context's when it is a full-integer one, else "int8"."""
    import tflite_export

    if target is not None:
        return target
    spec = tflite_export.TARGET_TABLE.get(context.target)
    if spec is not None and spec.quantize == "int8":
        return context.target
    return INT8_TARGET


def _check_epochs(epochs):
    if epochs is not None and (isinstance(epochs, bool) or int(epochs) < 1):
        raise ValueError(f"Expected `epochs` >= 1. Received: epochs={epochs}")
    return None if epochs is None else int(epochs)


class QAT(Step):
    """Quantization-aware training: `quantize` the model, fine-tune it, check its int8 file.

    The returned model is the QAT Keras model; the int8 TFLite file converted
    from it reproduces its predictions. The notes hold the Keras QAT accuracy, the
    int8 TFLite accuracy and their top-1 agreement on the validation data, and the
    layers left in float.

    Args:
        epochs: fine-tuning epochs (default: the strategy's `epochs`).
        preserve_sparsity: keep zeros from pruning exactly zero (default True).
        target: the integer TFLite target to check against (default: the
            strategy's target if it is a full-integer one, else "int8").
    """

    name = "qat"
    trains = True
    quantizes = True
    targets = INTEGER_TARGETS

    def __init__(self, *, epochs: int | None = None, preserve_sparsity: bool = True, target: str | None = None):
        self.epochs = _check_epochs(epochs)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.target = target

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        import tflite_export

        qat_model = quantize(model, preserve_sparsity=self.preserve_sparsity)
        context.fit(qat_model, epochs=self.epochs or context.epochs)
        target = _integer_target(context, self.target)
        blob = tflite_export.convert(qat_model, target, representative_data=context.representative_inputs())
        x, y = context.validation.arrays()
        keras_predictions = np.asarray(qat_model.predict(x, verbose=0))
        tflite_predictions = np.asarray(tflite_export.predict(blob, x))
        report = quantization_report(qat_model)
        notes = {
            "target": target,
            "keras_qat_accuracy": _keras_accuracy(qat_model, x, y),
            "int8_accuracy": float(tflite_export.evaluate(blob, x, y)),
            "top1_agreement": float(np.mean(keras_predictions.argmax(-1) == tflite_predictions.argmax(-1))),
            "float_layers": {entry.name: entry.detail for entry in report.skipped},
        }
        return StepResult(model=qat_model, notes=notes, tflite=blob if target == context.target else None)


class PTQ(Step):
    """Post-training full-integer quantization by the TFLite converter, calibrated on training inputs.

    The model is unchanged; the step hands on the int8 file it produced.

    Args:
        samples: calibration inputs drawn from the training data (at most 200).
        target: the integer TFLite target (default: the strategy's target if it
            is a full-integer one, else "int8").
    """

    name = "ptq"
    quantizes = True
    targets = INTEGER_TARGETS

    def __init__(self, *, samples: int = 200, target: str | None = None):
        if isinstance(samples, bool) or int(samples) < 1:
            raise ValueError(f"Expected `samples` >= 1. Received: samples={samples}")
        self.samples = int(samples)
        self.target = target

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        import tflite_export

        target = _integer_target(context, self.target)
        blob = tflite_export.convert(model, target, representative_data=context.representative_inputs(self.samples))
        x, y = context.validation.arrays()
        notes = {
            "target": target,
            "keras_accuracy": _keras_accuracy(model, x, y),
            "int8_accuracy": float(tflite_export.evaluate(blob, x, y)),
        }
        return StepResult(model=model, notes=notes, tflite=blob)
