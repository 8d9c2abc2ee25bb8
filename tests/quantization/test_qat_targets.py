"""`qat` and `ptq` make integer files: a float target is refused up front, with the fix."""

import keras
import numpy as np
import pytest

import kstruct
from kstruct.errors import StrategyError
from kstruct.quantization import PTQ, QAT
from kstruct.engine.training import StepContext, TrainingData
from qat_helpers import interpreter


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=64):
    x = np.random.default_rng(0).normal(size=(n, 8)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


class _NoTraining(StepContext):
    def fit(self, *args, **kwargs):
        raise AssertionError("the step trained before refusing the target")


def _context(target):
    return _NoTraining(
        train=TrainingData(_data(), batch_size=32),
        validation=TrainingData(_data(16), batch_size=32, what="validation"),
        epochs=1,
        target=target,
        compile_source=_model(),
        verbose=0,
    )


@pytest.mark.parametrize("target", ["float32", "dynamic", "float16", "gpu", "int16x8"])
def test_qat_refuses_a_non_int8_target_before_training(target):
    message = (
        rf"`qat` makes an integer TFLite file, so it needs an integer target: one of \('int8', 'edgetpu', 'micro'\). "
        rf"Received: optimize\(target=...\) = '{target}'. Use target='int8', or drop `qat` from the strategy"
    )
    with pytest.raises(StrategyError, match=message):
        QAT().apply(_model(), _context(target))


@pytest.mark.parametrize("target", ["float32", "dynamic", "float16", "gpu"])
def test_ptq_refuses_a_float_target_instead_of_handing_on_an_int8_file(target):
    with pytest.raises(StrategyError, match=rf"`ptq` makes an integer TFLite file.*Received: optimize\(target=...\) = '{target}'"):
        PTQ().apply(_model(), _context(target))


def test_a_step_target_that_is_not_integer_is_refused_too():
    with pytest.raises(StrategyError, match=r"Received: qat\(target=...\) = 'float16'"):
        QAT(target="float16").apply(_model(), _context("int8"))


def test_optimize_with_qat_and_a_gpu_target_raises_the_kstruct_error():
    x, y = _data()
    with pytest.raises(StrategyError, match=r"qat serves only the targets int8, edgetpu, micro"):
        kstruct.optimize(_model(), "qat", train_data=(x, y), epochs=1, target="gpu", verbose=0)


def test_ptq_for_int16x8_hands_on_an_int16_activation_file():
    x, y = _data()
    result = kstruct.optimize(_model(), "ptq", train_data=(x, y), target="int16x8", verbose=0)
    assert result.report.stages[-1].notes["target"] == "int16x8"
    dtypes = {np.dtype(t["dtype"]).name for t in interpreter(result.tflite).get_tensor_details()}
    assert "int16" in dtypes
