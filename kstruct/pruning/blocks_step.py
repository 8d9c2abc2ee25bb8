"""The `drop_blocks` strategy step: score each removable block by ablation, remove the `n` cheapest, fine-tune.

Scoring is bounded: every candidate is scored on one fixed sample of the validation
data, through one probe model (one trace), so a deep model with dozens of candidate
blocks costs dozens of forward passes over that sample, not dozens of rebuilt,
retraced models over the whole validation set. The sample holds at most
`SCORING_SAMPLES` rows, and fewer when the model has many candidates and the training
data is small (`scoring_rows`): the forward passes of all ablations together stay
within about two thirds of one fine-tuning epoch (a training step costs about three
forward passes). The report notes the time, the rows and the candidates.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from kstruct._graph import parse
from kstruct.pruning.blocks import CRITERIA, _blocks, _score, _without, check_block_count, removable_blocks
from kstruct.pruning.channels_step import context_loss, size_notes
from kstruct.engine.step import StepResult, TrainingStep
from kstruct.engine.training import StepContext, TrainingData, count_rows, take

SCORING_SAMPLES = 256
MIN_SCORING_SAMPLES = 32


def scoring_rows(epoch_rows: int, candidates: int, criterion: str = "loss") -> int:
    """Rows each block is scored on: all ablations together (`candidates` + the unablated
    model) forward about twice `epoch_rows`, the rows of one fine-tuning epoch, within
    [MIN_SCORING_SAMPLES, SCORING_SAMPLES]. "norm" needs one pass in all: the full sample."""
    if criterion == "norm":
        return SCORING_SAMPLES
    return int(min(SCORING_SAMPLES, max(MIN_SCORING_SAMPLES, 2 * epoch_rows // (candidates + 1))))


def scoring_sample(data: TrainingData, count: int = SCORING_SAMPLES, *, seed: int = 0):
    """`(x, y)`: up to `count` rows drawn at random (fixed `seed`) from array data, or a dataset's
    first batches (datasets shuffle themselves); the same rows score every block."""
    if not data.is_arrays:
        return data.arrays(limit=count)
    x, y = data.source
    rows = count_rows(x, data.what)
    if rows <= count:
        return x, y
    index = np.sort(np.random.default_rng(seed).choice(rows, size=count, replace=False))
    return take(x, index), take(y, index)


class DropBlocks(TrainingStep):
    """Removes the `n` blocks (residual, or shape-preserving layers) whose removal hurts the validation loss least, then fine-tunes.

    Args:
        n: how many blocks to remove.
        criterion: "loss" (one ablation per block on a fixed sample of at most 256 validation rows,
            fewer when many blocks meet little training data: see `scoring_rows`) or "norm".
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

    def surgery(self, model: keras.Model, context: StepContext) -> tuple[keras.Model, list[str], dict]:
        """(the model without the `n` cheapest blocks, their names, notes: every block's score and
        what scoring cost), untrained."""
        graph = parse(model, flatten=True)
        blocks = _blocks(graph)
        check_block_count(model, blocks, self.n)
        train = self.training_context(context).train
        rows = scoring_rows(train.steps_per_epoch() * train.batch_size, len(blocks), self.criterion)
        data = scoring_sample(context.validation, rows)
        start = time.perf_counter()
        scores = _score(model, graph, blocks, self.criterion, data, context_loss(context))
        seconds = time.perf_counter() - start
        dropped = sorted(scores, key=scores.get)[: self.n]
        notes = {
            "scores": {k: round(v, 6) for k, v in scores.items()},
            "scoring": {"seconds": round(seconds, 2), "samples": count_rows(data[0], "scoring sample"),
                        "candidates": len(blocks)},
        }
        return _without(model, graph, [b for b in blocks if b.name in dropped]), dropped, notes

    def structure(self, model: keras.Model, context: StepContext) -> keras.Model:
        """The model this step hands on, before its fine-tuning: what `auto` measures first."""
        return self.surgery(model, context)[0]

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        smaller, dropped, notes = self.surgery(model, context)
        self.training_context(context).fit(smaller, distill=self.distill)
        return StepResult(model=context.compile(smaller), notes={"dropped": dropped, **notes, **size_notes(model, smaller)})
