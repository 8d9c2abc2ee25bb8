"""Memory bookkeeping of a search: resident size, and the garbage a long search would pile up.

Why its own module: these are process-level workarounds (one touches a private TensorFlow
registry, see docs/internals.md), kept apart from the tuners that use them.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
from typing import Iterator

import keras


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MiB; falls back to the peak."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def trial_gradients_dropped() -> Iterator[None]:
    """Drops the gradient functions a trial registered with TensorFlow once it ends.

    Why: tf.custom_gradient inside a traced function registers its gradient in a
    process-wide registry and never removes it, and Keras's optimizer step does that
    for every model it trains (through tf.distribute's all_reduce); the entry holds
    the whole traced training graph, which kept about 8 MiB per trained trial alive
    (the same happens to any loop of `fit` on new models). A trial's graphs are dead
    once it ends, so nothing needs them.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in [n for n in registry if n.startswith("CustomGradient-") and n not in before]:
                del registry[name]


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Moves every object alive now out of the garbage collector's reach for the block.

    Why: Keras Tuner collects garbage twice before each trial (and once more to load
    the best model); with TensorFlow and Keras loaded each full collection took about
    0.1 s, mostly re-scanning objects that live as long as the process. Frozen, it
    scans only what the trials made (5-15 ms). Left alone if the caller froze objects
    already (gc.freeze is process-wide).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
