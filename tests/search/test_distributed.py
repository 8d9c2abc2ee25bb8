"""`search` on Keras Tuner's chief/worker setup on localhost: the chief serves the oracle, two workers
share the trials, and all three agree on the best."""

import pytest

from tests.tuner_cluster import run_chief_and_workers


@pytest.mark.slow
def test_one_chief_and_two_workers_finish_the_trials_and_agree_on_the_best(tmp_path):
    max_trials = 4
    summaries = run_chief_and_workers("tests.search.search_script", [str(tmp_path), str(max_trials), "1"], workers=2)
    assert summaries["chief"]["trials_run"] == 0  # the chief only runs the oracle
    assert summaries["worker0"]["trials_run"] + summaries["worker1"]["trials_run"] == max_trials
    assert len({s["best"] for s in summaries.values()}) == 1
    assert len({s["objective"] for s in summaries.values()}) == 1
    assert len({s["best_params"] for s in summaries.values()}) == 1
    for summary in summaries.values():
        assert len(summary["trials"]) == max_trials and summary["statuses"] == ["COMPLETED"]
