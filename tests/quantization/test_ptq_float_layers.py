"""`ptq(float_layers=k)`: the k layers int8 hurts most stay in float in the int8 file; `auto` searches k."""

import warnings

import keras
import keras_tuner
import numpy as np
import pytest

import kstruct
import tflite_export
from kstruct.engine.search_info import SpaceInfo
from kstruct.errors import StrategyError
from kstruct.quantization import PTQ, quantize
from tests.quantization.test_sensitivity import _model
from tests.search.conftest import blobs
from tests.tflite_export.test_float_layers import with_an_outlier_fed_by_a_dead_unit


@pytest.fixture(scope="module")
def outlier_model():
    """`fragile` has an outlier kernel row fed by a dead unit: the float model ignores it, int8
    rounds the rest of the layer to zero, so the sensitivity ranking puts it first."""
    keras.utils.set_random_seed(0)
    model = with_an_outlier_fed_by_a_dead_unit(_model())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_ptq_float_layers_keeps_the_most_sensitive_layer_in_float_and_the_file_closer(outlier_model):
    x, y = blobs(n=64)
    result = kstruct.optimize(outlier_model, "ptq(float_layers=1)", train_data=(x, y), validation_data=(x, y),
                              target="int8", verbose=0)
    assert result.strategy == "ptq(float_layers=1)"
    assert result.report.stages[-1].notes["float_layers"] == ["fragile"]
    analysis = tflite_export.analyze(result.tflite)
    assert [op for op, _ in analysis.float_ops] == ["FULLY_CONNECTED"] and "fragile" in analysis.float_ops[0][1]
    assert analysis.weight_dtypes.get("float32") == 1

    reference = outlier_model.predict(x, verbose=0)
    all_int8 = tflite_export.convert(outlier_model, "int8", x)
    error = {name: np.mean(np.abs(np.asarray(tflite_export.predict(blob, x)) - reference))
             for name, blob in (("float_layers", result.tflite), ("all_int8", all_int8))}
    assert error["float_layers"] < 0.2 * error["all_int8"], error


def test_auto_space_offers_a_count_of_float_layers_for_int8_only(outlier_model):
    def space(target):
        return SpaceInfo(model=outlier_model, target=target, integer_target=True, size_by_gzip=False,
                         array_data=True, max_epochs=1)

    hp = keras_tuner.HyperParameters()
    hp.values.update(quantization="ptq", float_layers=2)
    step = PTQ.search_space(hp, space("int8"))
    assert step == PTQ(float_layers=2) and str(step) == "ptq(float_layers=2)"
    declared = next(h for h in hp.space if h.name == "float_layers")
    assert (declared.min_value, declared.max_value) == (0, 3)  # at most MAX_FLOAT_LAYERS, never all 4 layers
    assert kstruct.Strategy.parse("ptq(float_layers=2)") == kstruct.Strategy([step])
    kstruct.Strategy([step]).validate("int8")

    edgetpu = keras_tuner.HyperParameters()
    edgetpu.values.update(quantization="ptq")
    assert PTQ.search_space(edgetpu, space("edgetpu")) == PTQ() and "float_layers" not in edgetpu.values


@pytest.mark.parametrize("value", [-1, True, 1.5, [], [1]])
def test_bad_float_layers_are_refused(value):
    with pytest.raises(StrategyError, match="Expected `float_layers` in ptq"):
        PTQ(float_layers=value)


def test_float_layers_need_the_int8_target_and_a_float_model(outlier_model):
    with pytest.raises(StrategyError, match="micro"):
        kstruct.Strategy([PTQ(float_layers=1)]).validate("micro")
    x, _ = blobs(n=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat_model = quantize(outlier_model)
    with pytest.raises(tflite_export.ExportError, match="works on a float model"):
        tflite_export.convert(qat_model, "int8", x, float_layers=["quant_fragile"])
