"""What a step sees when it declares its part of `auto`'s search space (`Step.search_space`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SpaceInfo:
    """The facts a step's search space depends on.

    Attributes:
        model: the model the chain starts from (read it, never change it).
        target: the TFLite target of the search.
        integer_target: the target is full-integer (int8, edgetpu, micro), so the chain ends in
            `qat` or `ptq`.
        size_by_gzip: the budget counts the gzipped file (`compression`), so zeros and shared
            values pay and `prune` and `cluster` take part.
        array_data: the training data is (x, y) arrays, so `batch_size` can be searched.
        max_epochs: the most fine-tuning epochs a step may get.
        four_bit_target: the target stores 4-bit kernels (`int4`), so the chain ends in `ptq` or
            `qat(bits=4)`, which chooses how many layers keep 8 bits.
        validation_inputs: a few validation inputs, for a space that ranks layers by a forward pass.
        latency_goal: the budget limits latency (`speedup`, `latency_ms`), so choices that buy speed
            at some size (a layer left in float in an int8 file) take part.
        distillable: the teacher can teach this model (one output of class scores), so `distill=true`
            is searched; for a regression or multi-output model every such trial would fail.
    """

    model: Any
    target: str
    integer_target: bool
    size_by_gzip: bool
    array_data: bool
    max_epochs: int
    four_bit_target: bool = False
    validation_inputs: Any = None
    latency_goal: bool = False
    distillable: bool = True
