import os
import tempfile

import pytest

import kstruct

from kstruct.search import Search
from kstruct.engine.step import Step
from kstruct.engine.training import StepContext, TrainingData
from tests.search.conftest import tiny_cnn


def test_search_step_returns_the_best_model_within_budget_and_notes(data, tmp_path):
    model = tiny_cnn()
    (x, y), (xv, yv) = data
    context = StepContext(train=TrainingData((x, y)), validation=TrainingData((xv, yv)), epochs=1, target="int8",
                          compile_source=model, verbose=0)
    budget = int(model.count_params() * 0.7)
    step = Search(trials=3, params=budget, directory=str(tmp_path))
    result = step.apply(model, context)
    assert isinstance(step, Step) and step.name == "search"
    assert result.model.count_params() <= budget and result.model.compiled
    notes = result.notes
    assert len(notes["trials"]) == 3 and notes["best_trial"]["feasible"]
    assert set(notes["pareto"]) == {"tflite_bytes", "latency_ms"}
    assert 0.0 <= notes["overhead"] <= 1.0 and notes["peak_rss_mb"] > 0
    assert os.path.getsize(notes["plot"]) > 1000 and notes["plot"].endswith(".png")


def test_through_optimize_without_a_directory_the_trials_go_and_save_draws_the_pareto_plot(data, tmp_path):
    (x, y), validation = data
    model = tiny_cnn()
    temporary, default = tmp_path / "tmpdir", tempfile.tempdir
    temporary.mkdir()
    tempfile.tempdir = str(temporary)  # where the trials go without directory=
    try:
        result = kstruct.optimize(model, f"search(trials=2, params={model.count_params()}, epochs=1)",
                                  train_data=(x, y), validation_data=validation, target="float32", verbose=0)
    finally:
        tempfile.tempdir = default
    # Two trials' files were there; TensorFlow's autograph leaves the code it generates, not kstruct's to remove.
    assert [p for p in temporary.iterdir() if not p.name.startswith("__autograph_generated")] == []
    notes = result.report.stages[-1].notes
    assert notes["directory"] is None and notes["plot"] is None and len(notes["trials"]) == 2
    assert set(result.plot()) == {"stages", "layers", "training", "pareto"}
    result.save(tmp_path / "out")
    assert os.path.getsize(tmp_path / "out" / "pareto.png") > 1000
    assert "![pareto](pareto.png)" in (tmp_path / "out" / "report.md").read_text()


def test_search_step_prints_back_in_the_strategy_grammar_and_checks_arguments():
    assert str(Search(trials=12, latency_ms=0.5)) == "search(trials=12, latency_ms=0.5)"
    assert str(Search(trials=4, tflite_bytes=20000, tuner="hyperband", epochs=3)) == (
        "search(trials=4, tflite_bytes=20000, tuner='hyperband', epochs=3)"
    )
    with pytest.raises(ValueError, match="tuner"):
        Search(tuner="grid")
    with pytest.raises(ValueError, match="trials"):
        Search(trials=0)
