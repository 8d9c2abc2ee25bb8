"""`auto` on Keras Tuner's chief/worker setup (KERASTUNER_* variables, localhost): the chief serves the
oracle and trains nothing, the worker runs every trial, and both hand back the same chain."""

import pytest

from tests.tuner_cluster import run_chief_and_workers


@pytest.mark.slow
def test_a_chief_and_one_worker_run_the_trials_once_and_agree_on_the_chain(tmp_path):
    trials = 2
    summaries = run_chief_and_workers("tests.auto.auto_script", [str(tmp_path / "search"), str(trials)], workers=1)
    assert summaries["chief"]["ran"] == 0 and summaries["worker0"]["ran"] == trials
    assert summaries["chief"] == {**summaries["worker0"], "ran": 0}
    assert len(summaries["chief"]["trials"]) == trials
    rows = list((tmp_path / "search" / "auto").glob("trial_*/kstruct_auto_trial.json"))
    assert len(rows) == trials and (tmp_path / "search" / "kstruct_auto.json").exists()
