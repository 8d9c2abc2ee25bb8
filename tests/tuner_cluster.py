"""Keras Tuner's chief/worker setup on localhost, for the distributed tests of `search` and `auto`:
one process per tuner id, told the oracle's address by Keras Tuner's own KERASTUNER_* variables."""

import json
import os
import socket

from tests.console import ROOT, spawn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_chief_and_workers(module: str, args: list[str], workers: int, timeout: float = 400) -> dict[str, dict]:
    """Runs `python -m module *args` as the chief and `workers` workers; returns each one's summary,
    the JSON of its last stdout line, by tuner id. A process that fails fails the test with its stderr."""
    port = free_port()
    processes = {}
    for tuner_id in ["chief"] + [f"worker{i}" for i in range(workers)]:
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", KERASTUNER_TUNER_ID=tuner_id,
                   KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
        processes[tuner_id] = spawn([module, *args], module=module, env=env, cwd=ROOT)
    summaries = {}
    try:
        for tuner_id, process in processes.items():
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, f"{tuner_id} failed:\n{err[-3000:]}"
            summaries[tuner_id] = json.loads(out.strip().splitlines()[-1])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    return summaries
