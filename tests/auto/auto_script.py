"""Runs a small `auto` search in its own process (for the chief/worker test).

    python -m tests.auto.auto_script DIRECTORY TRIALS

Prints one JSON line: the chosen chain, the trial ids in the result, and the trials this process ran.
"""

import json
import logging
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Lines(logging.Handler):
    """Counts the trials this process ran: one progress line each ("auto: trial 2/3 ..."), not the
    warning a failed trial logs before it ("auto: trial 2 (...) failed", counted twice before)."""

    def __init__(self):
        super().__init__()
        self.trials = 0

    def emit(self, record):
        self.trials += re.match(r"auto: trial \d+/\d+ ", record.getMessage()) is not None


def main(argv):
    directory, trials = argv[0], int(argv[1])
    import keras

    import kstruct
    from tests.search.conftest import blobs, tiny_cnn

    keras.utils.set_random_seed(0)
    x, y = blobs(n=160)
    model = tiny_cnn()
    lines = _Lines()
    logging.getLogger("kstruct").addHandler(lines)
    logging.getLogger("kstruct").setLevel(logging.INFO)
    result = kstruct.optimize(
        model, f"auto(params={model.count_params()}, max_accuracy_drop=1.0, trials={trials}, epochs=1, tuner='random', "
               f"directory='{directory}')",
        train_data=(x[:128], y[:128]), validation_data=(x[128:], y[128:]), target="float32", verbose=1,
    )
    print(json.dumps({
        "strategy": result.strategy,
        "trials": sorted(row["trial_id"] for row in result.trials),
        "ran": lines.trials,
        "params": result.model.count_params(),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
