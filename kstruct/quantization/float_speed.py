"""Which layers run faster in float than in int8 inside the int8 file, on this machine: the ranking for a
per-layer float fallback that buys speed (`ptq(float_layers=k, float_by='latency')`).

Why measured, not modelled: int8 is not faster everywhere. On the AMD EPYC this project is built on, LiteRT's
int8 convolution over a 28x28 image with one input channel costs about 24 us whatever its channel count
(its cost follows the output pixels), against 3.5 us in float: the example CNN's int8 file takes 34 us, and
11.5 us with its first convolution left in float (benchmarks/float_speed.py). On an Intel Xeon with AMX
a layer left in float still made the example CNN's int8 file about 3x faster (benchmarks/auto.py, budget
(c)); other CPUs may differ, hence the timing.
So each candidate layer is left in float alone, the file converted and timed, and the time it saves is its
score. A conversion per layer is not free, so only the `CANDIDATES` layers with the most output values
(where per-pixel costs live) are tried. A ranking is kept per architecture and target for the life of the
process: timing does not depend on the weights, and `auto` asks for it twice per trial (the structure
check before training, then the step after it).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import keras
import tflite_export

from kstruct.quantization.sensitivity import ranked_layers

logger = logging.getLogger("kstruct")

CANDIDATES = 6  # layers tried, the ones with the most output values first
_TIMING_MS = 100.0  # about this much invoking per file: enough runs for a steady median of a tiny model
_MAX_RUNS = 300
_RANKINGS: dict[tuple[str, str], list[tuple[str, float]]] = {}  # (target, architecture) -> ranking
_KEPT_RANKINGS = 32


def _median_ms(blob: bytes, runs: int | None = None) -> tuple[float, int]:
    """The fastest of three medians (one thread), and the runs per median used."""
    if runs is None:
        probe = tflite_export.benchmark(blob, threads=1, runs=5).median_ms
        runs = max(5, min(_MAX_RUNS, int(_TIMING_MS / max(probe, 1e-3))))
    return min(tflite_export.benchmark(blob, threads=1, runs=runs).median_ms for _ in range(3)), runs


def _output_values(model: keras.Model, name: str) -> int:
    try:
        shape = model.get_layer(name).output.shape
    except (AttributeError, ValueError):  # a shared layer has no single output
        return 0
    return math.prod(d for d in shape[1:] if d is not None)


def _architecture(model: keras.Model) -> str | None:
    """The model's layers, shapes and connections without weights or names, or None where its config cannot
    be written. Names are left out because a rebuilt copy of the same model names its inputs anew."""
    try:
        config = model.get_config()
    except (NotImplementedError, TypeError, ValueError):
        return None
    positions = {layer.name: f"#{index}" for index, layer in enumerate(model.layers)}
    positions[model.name] = "#model"

    def anonymous(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: anonymous(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [anonymous(item) for item in value]
        return positions.get(value, value) if isinstance(value, str) else value

    return json.dumps(anonymous(config), sort_keys=True, default=str)


def float_speedups(model: keras.Model, representative_data: Any, target: str = "int8") -> list[tuple[str, float]]:
    """`(layer name, ms saved)` for each tried layer whose float copy makes the `target` file faster, most first.

    Args:
        model: a Sequential or functional Keras model (not modified).
        representative_data: calibration inputs, as `tflite_export.convert` takes them.
        target: the integer target whose file is timed.

    Returns:
        The ranking; empty when no tried layer is faster in float (or the model has none kstruct ranks).
    """
    key = (target, _architecture(model))
    if key[1] is not None and key in _RANKINGS:
        return list(_RANKINGS[key])
    ranking = _timed_ranking(model, representative_data, target)
    if key[1] is not None:
        if len(_RANKINGS) >= _KEPT_RANKINGS:
            del _RANKINGS[next(iter(_RANKINGS))]  # the oldest
        _RANKINGS[key] = list(ranking)
    return ranking


def _timed_ranking(model: keras.Model, representative_data: Any, target: str) -> list[tuple[str, float]]:
    names = ranked_layers(model)
    if not names:
        return []
    names = sorted(names, key=lambda name: -_output_values(model, name))[:CANDIDATES]
    base, runs = _median_ms(tflite_export.convert(model, target, representative_data=representative_data))
    saved = []
    for name in names:
        blob = tflite_export.convert(model, target, representative_data=representative_data, float_layers=[name])
        gain = base - _median_ms(blob, runs)[0]
        if gain > 0.02 * base:  # beyond timing noise: a layer that saves under 2% is not worth its float weights
            saved.append((name, gain))
    saved.sort(key=lambda item: -item[1])
    logger.info("kstruct: layers faster in float in the %s file (%.4f ms all %s): %s", target, base, target,
                ", ".join(f"{name} -{gain:.4f} ms" for name, gain in saved) or "none")
    return saved
