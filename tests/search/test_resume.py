import json
import os
import signal
import time
from pathlib import Path

import pytest

from kstruct.search import SearchError, run, space
from tests.console import spawn
from tests.search.conftest import blobs, tiny_cnn

ROOT = Path(__file__).resolve().parents[2]


def start(directory, max_trials=4, epochs=3):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(name, None)
    module = "tests.search.search_script"
    return spawn([module, str(directory), str(max_trials), str(epochs)], module=module, env=env, cwd=ROOT)


def completed(project: Path) -> dict[str, dict]:
    """Trials in the oracle's saved `end_order` (Keras Tuner writes a trial's file before its oracle
    state, and a kill between the two leaves the trial "ongoing", to be run again)."""
    done = {}
    try:
        ended = set(json.loads((project / "oracle.json").read_text())["end_order"])
    except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
        return done
    for path in project.glob("trial_*/trial.json"):
        try:
            trial = json.loads(path.read_text())
        except ValueError:
            continue
        if trial["status"] == "COMPLETED" and trial["trial_id"] in ended:
            done[trial["trial_id"]] = trial
    return done


def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    project = tmp_path / "kstruct_search"
    process = start(tmp_path)
    deadline = time.monotonic() + 180
    while len(completed(project)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = completed(project)
    assert 2 <= len(before) < 4, "the search should have been killed part-way"
    checkpoints = {tid: (project / f"trial_{tid}" / "checkpoint.weights.h5").stat().st_mtime_ns for tid in before}

    resumed = start(tmp_path)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0
    summary = json.loads(out.strip().splitlines()[-1])
    after = completed(project)
    assert len(after) == 4 and summary["statuses"] == ["COMPLETED"]
    assert summary["trials_run"] == 4 - len(before)  # only the unfinished trials ran again
    for tid, trial in before.items():
        assert after[tid]["hyperparameters"]["values"] == trial["hyperparameters"]["values"]
        assert after[tid]["score"] == trial["score"]
        assert (project / f"trial_{tid}" / "checkpoint.weights.h5").stat().st_mtime_ns == checkpoints[tid]


def test_resuming_with_other_settings_is_refused_and_overwrite_starts_afresh(tmp_path):
    x, y = blobs(120)
    common = dict(tuner="random", epochs=1, directory=str(tmp_path), latency_runs=5, seed=2)
    run(space(tiny_cnn()), (x[:90], y[:90]), (x[90:], y[90:]), max_trials=1, budget={"params": 10**6}, **common)
    with pytest.raises(SearchError, match=r"other settings \(budget: .*overwrite=True"):
        run(space(tiny_cnn()), (x[:90], y[:90]), (x[90:], y[90:]), max_trials=1, budget={"params": 10**5}, **common)
    result = run(space(tiny_cnn()), (x[:90], y[:90]), (x[90:], y[90:]), max_trials=1, budget={"params": 10**5},
                 overwrite=True, **common)
    assert len(result.trials) == 1
