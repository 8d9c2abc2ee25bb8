"""The `drop_blocks` strategy step: score each removable block by ablation, remove the `n` cheapest, fine-tune."""

from __future__ import annotations

import keras

from kstruct.pruning.blocks import CRITERIA, check_block_count, drop_blocks, removable_blocks, score_blocks
from kstruct.pruning.channels_step import context_loss, size_notes
from kstruct.engine.step import StepResult, TrainingStep
from kstruct.engine.training import StepContext

SCORING_SAMPLES = 512


class DropBlocks(TrainingStep):
    """Removes the `n` blocks (residual, or shape-preserving layers) whose removal hurts the validation loss least, then fine-tunes.

    Args:
        n: how many blocks to remove.
        criterion: "loss" (one ablation per block on the validation data) or "norm".
        epochs: fine-tuning epochs (default: optimize's `epochs`).
        distill: fine-tune from the teacher's class scores as well as the labels.
        **training: `optimizer`, `learning_rate`, `lr_schedule`, `batch_size` (see `TrainingStep`).
    """

    name = "drop_blocks"
    search_rank = 10
    positional = ("n",)

    def __init__(
        self, n: int = 1, *, criterion: str = "loss", epochs: int | None = None, distill: bool = False, **training
    ):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Expected `n` (blocks to drop) to be an integer >= 1. Received: n={n!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"Expected `criterion` to be one of {CRITERIA}. Received: criterion={criterion!r}")
        self.n = n
        self.criterion = criterion
        self.init_training(epochs, distill, training)

    @classmethod
    def search_space(cls, hp, space) -> "DropBlocks | None":
        """`auto` tries dropping 0 (off) up to 4 of the blocks the model offers."""
        count = len(removable_blocks(space.model))
        if count == 0:
            return None
        n = hp.Int("drop_blocks", 0, min(count, 4), default=0)
        return cls(n) if n > 0 else None

    def surgery(self, model: keras.Model, context: StepContext) -> tuple[keras.Model, list[str], dict[str, float]]:
        """(the model without the `n` cheapest blocks, their names, every block's score), untrained."""
        blocks = removable_blocks(model)
        check_block_count(model, blocks, self.n)
        data = context.validation.arrays(limit=SCORING_SAMPLES)
        scores = score_blocks(model, blocks, self.criterion, data=data, loss=context_loss(context))
        dropped = sorted(scores, key=scores.get)[: self.n]
        return drop_blocks(model, names=dropped), dropped, scores

    def structure(self, model: keras.Model, context: StepContext) -> keras.Model:
        """The model this step hands on, before its fine-tuning: what `auto` measures first."""
        return self.surgery(model, context)[0]

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        smaller, dropped, scores = self.surgery(model, context)
        self.training_context(context).fit(smaller, distill=self.distill)
        notes = {"dropped": dropped, "scores": {k: round(v, 6) for k, v in scores.items()}}
        return StepResult(model=context.compile(smaller), notes={**notes, **size_notes(model, smaller)})
