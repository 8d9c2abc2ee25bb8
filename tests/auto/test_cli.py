"""`auto` through the console script: one line per trial, and a killed search resumes from its folder."""

import json
import signal
import time
from pathlib import Path

import keras
import numpy as np

from tests.console import environment, kstruct, spawn
from tests.search.conftest import blobs, tiny_cnn
from tests.search.test_resume import completed


def _completed(folder: Path) -> dict[str, dict]:
    """Trials Keras Tuner recorded as finished (`completed`, as for `search`), with auto's row for each."""
    rows = {}
    for trial_id in completed(folder / "auto"):
        row = folder / "auto" / f"trial_{trial_id}" / "kstruct_auto_trial.json"
        if row.exists():
            rows[trial_id] = json.loads(row.read_text())
    return rows


def test_auto_prints_each_trial_and_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = blobs(n=300)
    model = tiny_cnn()
    model.fit(x[:240], y[:240], epochs=2, verbose=0)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x=x[:240], y=y[:240], x_val=x[240:], y_val=y[240:])
    folder = tmp_path / "search"
    limit = int(model.count_params() * 0.6)
    strategy = f"auto(params={limit}, max_accuracy_drop=0.5, trials=4, epochs=1, tuner='random', directory='{folder}')"
    env = environment(TF_CPP_MIN_LOG_LEVEL="2")
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(name, None)
    args = ["optimize", str(tmp_path / "model.keras"), "--strategy", strategy, "--data",
            str(tmp_path / "data.npz"), "--target", "float32", "--out", str(tmp_path / "out")]

    first = spawn(["kstruct", *args], env=env)
    deadline = time.monotonic() + 240
    while len(_completed(folder)) < 1 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = _completed(folder)
    assert 1 <= len(before) < 4, "the search should have been killed part-way"
    assert not (tmp_path / "out").exists()

    done = kstruct(*args, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("auto: trial ")]
    assert len(lines) == 4 - len(before), done.stdout  # only the unfinished trials ran again
    assert all(line.startswith(f"auto: trial {len(before) + i}/4 ") for i, line in enumerate(lines, 1)), lines
    assert any(" feasible" in line or "over budget" in line for line in lines)
    assert "auto: chose " in done.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    notes = report["stages"][-1]["notes"]["auto"]
    assert len(notes["trials"]) == 4
    for row in notes["trials"]:  # the trials finished before the kill come back as they were recorded
        if row["trial_id"] in before:
            assert row == before[row["trial_id"]]
    assert notes["best_trial"]["params"] <= limit and report["stages"][-1]["params"] == notes["best_trial"]["params"]
    markdown = (tmp_path / "out" / "report.md").read_text()  # the trial table, and the figure embedded
    assert "## auto: trials" in markdown and f"Chosen: `{notes['strategy']}`" in markdown
    assert markdown.count("\n| ") - 1 >= 4 and "![auto](auto.png)" in markdown
    assert (tmp_path / "out" / "auto.png").stat().st_size > 10_000
