"""The `drop_blocks` strategy step: score each removable block by ablation, remove the `n` cheapest, fine-tune."""

from __future__ import annotations

import keras

from kstruct.pruning.blocks import CRITERIA, check_block_count, drop_blocks, removable_blocks, score_blocks
from kstruct.pruning.channels_step import context_loss, size_notes
from kstruct.engine.step import Step, StepResult, optional_positive_int_argument
from kstruct.engine.training import StepContext

SCORING_SAMPLES = 512


class DropBlocks(Step):
    """Removes the `n` blocks (residual, or shape-preserving layers) whose removal hurts the validation loss least, then fine-tunes.

    Args:
        n: how many blocks to remove.
        criterion: "loss" (one ablation per block on the validation data) or "norm".
        epochs: fine-tuning epochs (default: optimize's `epochs`).
        distill: fine-tune from the teacher's class scores as well as the labels.
    """

    name = "drop_blocks"
    trains = True
    positional = ("n",)

    def __init__(self, n: int = 1, *, criterion: str = "loss", epochs: int | None = None, distill: bool = False):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` (blocks to drop) to be an integer >= 1. Received: n={n!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"Expected `criterion` to be one of {CRITERIA}. Received: criterion={criterion!r}")
        self.n = n
        self.criterion = criterion
        self.epochs = optional_positive_int_argument("epochs", epochs)
        self.distill = bool(distill)

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        blocks = removable_blocks(model)
        check_block_count(model, blocks, self.n)
        data = context.validation.arrays(limit=SCORING_SAMPLES)
        scores = score_blocks(model, blocks, self.criterion, data=data, loss=context_loss(context))
        dropped = sorted(scores, key=scores.get)[: self.n]
        smaller = drop_blocks(model, names=dropped)
        context.fit(smaller, epochs=self.epochs or context.epochs, distill=self.distill)
        notes = {"dropped": dropped, "scores": {k: round(v, 6) for k, v in scores.items()}}
        return StepResult(model=context.compile(smaller), notes={**notes, **size_notes(model, smaller)})
