import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_one_chief_and_two_workers_finish_the_trials_and_agree_on_the_best(tmp_path):
    port = free_port()
    max_trials = 4
    processes = {}
    for tuner_id in ("chief", "worker0", "worker1"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", KERASTUNER_TUNER_ID=tuner_id,
                   KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "tests.search.search_script", str(tmp_path), str(max_trials), "1"],
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
    assert summaries["chief"]["trials_run"] == 0  # the chief only runs the oracle
    assert summaries["worker0"]["trials_run"] + summaries["worker1"]["trials_run"] == max_trials
    assert len({s["best"] for s in summaries.values()}) == 1
    assert len({s["objective"] for s in summaries.values()}) == 1
    assert len({s["best_params"] for s in summaries.values()}) == 1
    for summary in summaries.values():
        assert len(summary["trials"]) == max_trials and summary["statuses"] == ["COMPLETED"]
