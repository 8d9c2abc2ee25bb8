"""Memory across `auto` trials: resident size after each of 20 tiny trials in one process (issue 21, item 6).

One `kstruct.optimize(model, "auto(...)")` on a small CNN (8x8 inputs, 400 toy images), with a
budget every structure meets (params) and an accuracy drop of 1.0, so every trial is trained,
converted, timed and saved, the most a trial can leave behind. A handler on the "kstruct"
logger reads, at each trial's progress line, the process's resident size (RSS), its anonymous
part (RssAnon: what the process allocated itself, not shared-library pages) and the peak RSS
so far (ru_maxrss). Target: peak RSS growth from trial 1 to trial 20 under 100 MiB.

Run: `python benchmarks/auto_memory.py [--trials 20] [--target float32] [--tuner random]`
(about 2-4 minutes on 2 cores for 20 trials at float32).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _TrialMemory(logging.Handler):
    """Records (RSS, RssAnon, peak RSS) in MiB at each `auto: trial k/N` line."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[float, float, float, float]] = []
        self.started = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("auto: trial "):
            self.rows.append((_status_mib("VmRSS"), _status_mib("RssAnon"), _peak_mib(), time.perf_counter() - self.started))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--target", default="float32")
    parser.add_argument("--tuner", default="random")
    args = parser.parse_args(argv)

    import keras

    import kstruct
    from tests.search.conftest import blobs, tiny_cnn

    keras.utils.set_random_seed(0)
    x, y = blobs(n=400)
    model = tiny_cnn()
    model.fit(x[:320], y[:320], epochs=2, verbose=0)
    handler = _TrialMemory()
    logger = logging.getLogger("kstruct")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    before = (_status_mib("VmRSS"), _status_mib("RssAnon"), _peak_mib())
    with tempfile.TemporaryDirectory() as folder:
        strategy = (f"auto(params={model.count_params() * 2}, max_accuracy_drop=1.0, trials={args.trials}, epochs=1, "
                    f"tuner='{args.tuner}', directory='{folder}/search')")
        result = kstruct.optimize(model, strategy, train_data=(x[:320], y[:320]), validation_data=(x[320:], y[320:]),
                                  target=args.target, verbose=1)
    logger.removeHandler(handler)
    rows = handler.rows
    print(f"\nstart: RSS {before[0]:.0f} MiB, RssAnon {before[1]:.0f} MiB, peak {before[2]:.0f} MiB")
    print(f"{'trial':>5} {'RSS MiB':>8} {'anon MiB':>9} {'peak MiB':>9} {'s':>6}")
    for index, (rss, anon, peak, seconds) in enumerate(rows, 1):
        print(f"{index:>5} {rss:>8.0f} {anon:>9.0f} {peak:>9.0f} {seconds:>6.1f}")
    trained = sum(1 for row in result.trials if row["epochs"])
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        growth = last[2] - first[2]
        print(f"\n{len(rows)} trials ({trained} trained), target {args.target}, chosen {result.strategy!r}")
        print(f"peak RSS growth trial 1 -> {len(rows)}: {growth:+.1f} MiB (target < 100); "
              f"RSS {last[0] - first[0]:+.1f} MiB, RssAnon {last[1] - first[1]:+.1f} MiB")
        return 0 if growth < 100 else 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
