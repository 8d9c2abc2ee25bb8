"""A search's directory, shared by a chief and its workers: settings, trials, roles.

Keras Tuner keeps each trial in `trial_*/trial.json`; kstruct adds its settings file (so a
resume with other settings is refused) and reads the trials back from there.
"""

from __future__ import annotations

import glob
import json
import os
import time

import keras_tuner

from kstruct.search.budget import SearchError

SETTINGS_FILE = "kstruct_search.json"
RESULT_FILE = "kstruct_result.json"
_TERMINAL = ("COMPLETED", "FAILED", "STOPPED")


def tuner_seed(seed: int | None) -> int | None:
    """The seed to give Keras Tuner for the user's `seed`: Keras Tuner reads 0 as "no seed" (`seed or
    random.randint(...)`), so seed=0 gave a different search each run. Every seed is shifted by one."""
    return None if seed is None else seed + 1


def role() -> str:
    """"single", "chief" or "worker", from Keras Tuner's own environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def check_settings(path: str, settings: dict) -> None:
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    changed = [k for k in settings if k in saved and saved[k] != settings[k]]
    if changed:
        diffs = "; ".join(f"{k}: {saved[k]!r} -> {settings[k]!r}" for k in changed)
        raise SearchError(
            f"{os.path.dirname(path)} holds a search with other settings ({diffs}). Resuming would mix them: "
            "pass overwrite=True (CLI: --overwrite) to start afresh, or use another directory"
        )


def load_trials(project_dir: str) -> list[keras_tuner.engine.trial.Trial]:
    trials = []
    for path in sorted(glob.glob(os.path.join(project_dir, "trial_*", "trial.json"))):
        for _ in range(20):  # a file being rewritten by the chief: read again
            try:
                trials.append(keras_tuner.engine.trial.Trial.load(path))
                break
            except (ValueError, KeyError, OSError):
                time.sleep(0.1)
    return sorted(trials, key=lambda t: t.trial_id)


def wait_for_all_trials(project_dir: str, timeout: float) -> None:
    """A worker that was told to stop waits for the other workers' last trials."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(t.status in _TERMINAL for t in load_trials(project_dir)):
            return
        time.sleep(1.0)
