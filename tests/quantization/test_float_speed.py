"""`ptq(float_layers=k, float_by='latency')`: the k layers whose float copy makes the int8 file faster on
this machine stay in float; `auto` chooses `float_by` under a latency budget. Which layer wins depends on
the CPU (int8 convolutions are slower than float ones on AMD EPYC, faster with AMX), so the tests fix the
timings where they check the ranking, and check the real timing only for what holds on any machine."""

import keras
import keras_tuner
import pytest

import kstruct
import tflite_export
from kstruct.engine.search_info import SpaceInfo
from kstruct.errors import StrategyError
from kstruct.quantization import PTQ, float_speed
from kstruct.quantization import step as quantization_step
from tests.quantization.test_sensitivity import _model
from tests.search.conftest import blobs


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    built = _model()
    built.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return built


@pytest.fixture(autouse=True)
def no_kept_rankings():
    """Each test times (or fakes the timing of) its own files: none kept from another test."""
    float_speed._RANKINGS.clear()
    yield
    float_speed._RANKINGS.clear()


def test_layers_are_tried_by_output_size_and_ranked_by_time_saved(model, monkeypatch):
    """Timings fixed per file: `hidden` in float saves 5 us, `conv` 8 us, `fragile` 0.1 us (under 2%: noise)."""
    saved = {"conv": 0.008, "hidden": 0.005, "fragile": 0.0001, "classifier": -0.002}
    tried = []

    def convert(model, target, representative_data=None, float_layers=()):
        tried.extend(float_layers)
        return ",".join(float_layers).encode()

    monkeypatch.setattr(float_speed.tflite_export, "convert", convert)
    monkeypatch.setattr(float_speed, "_median_ms", lambda blob, runs=None: (0.030 - saved.get(blob.decode(), 0.0), 7))
    monkeypatch.setattr(float_speed, "CANDIDATES", 3)
    x, _ = blobs(n=8)
    assert float_speed.float_speedups(model, x) == [("conv", pytest.approx(0.008)), ("hidden", pytest.approx(0.005))]
    assert tried == ["conv", "hidden", "fragile"]  # 144, 12 and 10 output values: the classifier's 3 not tried


def test_a_ranking_is_kept_per_architecture_not_per_weights(model, monkeypatch):
    """auto asks twice per trial (structure check, then the step): the second ask converts nothing."""
    converted = []

    def convert(model, target, representative_data=None, float_layers=()):
        converted.append(tuple(float_layers))
        return ",".join(float_layers).encode()

    monkeypatch.setattr(float_speed.tflite_export, "convert", convert)
    monkeypatch.setattr(float_speed, "_median_ms", lambda blob, runs=None: (0.030 - 0.01 * (blob == b"conv"), 7))
    x, _ = blobs(n=8)
    first = float_speed.float_speedups(model, x)
    assert first == [("conv", pytest.approx(0.01))] and len(converted) == 5  # all int8, then 4 layers alone
    retrained = keras.models.clone_model(model)  # the same layers, other weights
    assert float_speed.float_speedups(retrained, x) == first and len(converted) == 5
    assert float_speed.float_speedups(model, x, target="int8") == first and len(converted) == 5
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden")])
    float_speed.float_speedups(other, x.reshape(len(x), -1)[:, :4])
    assert len(converted) > 5  # another architecture is timed


def test_ptq_float_by_latency_keeps_the_fastest_in_float_layers_in_float(model, monkeypatch):
    rankings = []
    monkeypatch.setattr(quantization_step, "float_speedups",
                        lambda model, data, target: rankings.append(target) or [("hidden", 0.01), ("conv", 0.004)])
    x, y = blobs(n=64)
    result = kstruct.optimize(model, "ptq(float_layers=1, float_by='latency')", train_data=(x, y),
                              validation_data=(x, y), target="int8", verbose=0)
    assert rankings == ["int8"]
    assert result.strategy == "ptq(float_layers=1, float_by='latency')"
    assert result.report.stages[-1].notes["float_layers"] == ["hidden"]
    float_ops = tflite_export.analyze(result.tflite).float_ops
    assert [op for op, _ in float_ops] == ["FULLY_CONNECTED"] and "hidden" in float_ops[0][1]


def test_no_layer_faster_in_float_leaves_the_file_all_int8(model, monkeypatch):
    monkeypatch.setattr(quantization_step, "float_speedups", lambda model, data, target: [])
    x, y = blobs(n=64)
    result = kstruct.optimize(model, "ptq(float_layers=2, float_by='latency')", train_data=(x, y),
                              validation_data=(x, y), target="int8", verbose=0)
    assert "float_layers" not in result.report.stages[-1].notes
    assert tflite_export.analyze(result.tflite).float_ops == []


def test_the_real_timing_ranks_only_layers_it_tried_most_time_saved_first(model):
    x, _ = blobs(n=32)
    ranking = float_speed.float_speedups(model, x)
    assert {name for name, _ in ranking} <= {"conv", "hidden", "fragile", "classifier"}
    gains = [gain for _, gain in ranking]
    assert all(gain > 0 for gain in gains) and gains == sorted(gains, reverse=True)


def test_auto_chooses_float_by_under_a_latency_budget_only(model):
    def space(latency_goal):
        return SpaceInfo(model=model, target="int8", integer_target=True, size_by_gzip=False, array_data=True,
                         max_epochs=1, latency_goal=latency_goal)

    hp = keras_tuner.HyperParameters()
    hp.values.update(quantization="ptq", float_layers=1, float_by="latency")
    step = PTQ.search_space(hp, space(latency_goal=True))
    assert step == PTQ(float_layers=1, float_by="latency")
    assert kstruct.Strategy.parse(str(step)) == kstruct.Strategy([step])
    declared = next(h for h in hp.space if h.name == "float_by")
    assert list(declared.values) == ["accuracy", "latency"] and declared.default == "latency"
    assert next(h for h in hp.space if h.name == "float_layers").default == 1  # the first guess: one layer

    size = keras_tuner.HyperParameters()
    size.values.update(quantization="ptq", float_layers=1)
    assert PTQ.search_space(size, space(latency_goal=False)) == PTQ(float_layers=1)
    assert "float_by" not in size.values
    assert next(h for h in size.space if h.name == "float_layers").default == 0


def test_a_bad_float_by_is_refused_in_one_line():
    with pytest.raises(StrategyError) as caught:
        kstruct.Strategy.parse("ptq(float_layers=1, float_by='speed')")
    assert "Expected `float_by` in ptq to be one of ('accuracy', 'latency'). Received: float_by='speed'" in str(caught.value)
    assert "\n" not in str(caught.value)
