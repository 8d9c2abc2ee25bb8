"""Runs a small search in its own process (for the resume and distributed tests).

    python -m tests.search.search_script DIRECTORY MAX_TRIALS EPOCHS [BUDGET_JSON]

Prints one JSON line: the best trial, its objective, and how many trials this process ran.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv):
    directory, max_trials, epochs = argv[0], int(argv[1]), int(argv[2])
    budget = json.loads(argv[3]) if len(argv) > 3 else {"params": 10**6}
    from kstruct.search import run, space
    from tests.search.conftest import blobs, tiny_cnn

    x, y = blobs(400)
    result = run(
        space(tiny_cnn()), (x[:320], y[:320]), (x[320:], y[320:]),
        budget=budget, tuner="random", max_trials=max_trials, epochs=epochs,
        directory=directory, latency_runs=10, seed=3, early_stopping=False,
    )
    print(json.dumps({
        "best": result.best_trial.trial_id,
        "objective": result.best_trial.objective,
        "trials": sorted(t.trial_id for t in result.trials),
        "statuses": sorted({t.status for t in result.trials}),
        "trials_run": len(result.rss_mb_after_trials),
        "best_params": result.best_model.count_params(),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
