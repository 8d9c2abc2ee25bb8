"""The `qat` and `ptq` strategy steps."""

import numpy as np
import pytest

from kstruct.quantization import PTQ, QAT, QuantizeWrapper
from kstruct.engine.step import Step
from kstruct.engine.training import StepContext, TrainingData
from qat_helpers import float_fallback_ops, non_integer_tensors

import tflite_export


@pytest.fixture
def context(float_cnn, digits):
    x_train, y_train, x_test, y_test = digits
    return StepContext(
        train=TrainingData((x_train[:1000], y_train[:1000]), batch_size=64),
        validation=TrainingData((x_test[:400], y_test[:400]), batch_size=64, what="validation"),
        epochs=1,
        target="int8",
        compile_source=float_cnn,
        verbose=0,
    )


def test_qat_step_returns_the_qat_model_and_its_int8_accuracy(float_cnn, context):
    result = QAT().apply(float_cnn, context)

    assert any(isinstance(layer, QuantizeWrapper) for layer in result.model.layers)
    assert result.tflite is not None and non_integer_tensors(result.tflite) == []
    notes = result.notes
    assert notes["target"] == "int8" and notes["float_layers"] == {}
    assert notes["top1_agreement"] >= 0.995
    assert abs(notes["keras_qat_accuracy"] - notes["int8_accuracy"]) <= 0.005
    x, y = context.validation.arrays()
    assert notes["int8_accuracy"] == pytest.approx(tflite_export.evaluate(result.tflite, x, y))


def test_ptq_step_keeps_the_model_and_returns_a_calibrated_int8_file(float_cnn, context):
    result = PTQ(samples=100).apply(float_cnn, context)

    assert result.model is float_cnn
    assert non_integer_tensors(result.tflite) == [] and float_fallback_ops(result.tflite) == []
    assert abs(result.notes["keras_accuracy"] - result.notes["int8_accuracy"]) <= 0.05


def test_steps_take_strategy_keyword_arguments_and_print_them_back():
    assert isinstance(QAT(), Step) and isinstance(PTQ(), Step)
    assert (QAT.name, PTQ.name) == ("qat", "ptq")
    assert str(QAT()) == "qat" and str(QAT(epochs=2)) == "qat(epochs=2)"
    assert str(PTQ()) == "ptq" and str(PTQ(samples=50)) == "ptq(samples=50)"
    with pytest.raises(ValueError, match="Expected `epochs` >= 1. Received: epochs=0"):
        QAT(epochs=0)
    with pytest.raises(ValueError, match="Expected `samples` >= 1"):
        PTQ(samples=0)
