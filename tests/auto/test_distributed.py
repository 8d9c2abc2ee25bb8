"""`auto` on Keras Tuner's chief/worker setup (KERASTUNER_* variables, localhost): the chief serves the
oracle and trains nothing, the worker runs every trial, and both hand back the same chain."""

import json
import os
import subprocess
import sys

import pytest

from tests.console import ROOT
from tests.search.test_distributed import free_port


@pytest.mark.slow
def test_a_chief_and_one_worker_run_the_trials_once_and_agree_on_the_chain(tmp_path):
    port, trials = free_port(), 2
    processes = {}
    for tuner_id in ("chief", "worker0"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", KERASTUNER_TUNER_ID=tuner_id,
                   KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "tests.auto.auto_script", str(tmp_path / "search"), str(trials)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    summaries = {}
    try:
        for tuner_id, process in processes.items():
            out, err = process.communicate(timeout=400)
            assert process.returncode == 0, f"{tuner_id} failed:\n{err[-3000:]}"
            summaries[tuner_id] = json.loads(out.strip().splitlines()[-1])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    assert summaries["chief"]["ran"] == 0 and summaries["worker0"]["ran"] == trials
    assert summaries["chief"] == {**summaries["worker0"], "ran": 0}
    assert len(summaries["chief"]["trials"]) == trials
    rows = list((tmp_path / "search" / "auto").glob("trial_*/kstruct_auto_trial.json"))
    assert len(rows) == trials and (tmp_path / "search" / "kstruct_auto.json").exists()
