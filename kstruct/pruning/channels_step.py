"""The `prune_channels` strategy step: rank, mask gradually while fine-tuning, then cut the channels out."""

from __future__ import annotations

import logging

import keras

from kstruct._graph import leaf_layers
from kstruct.errors import PruningError
from kstruct.pruning.channels import _check_ratio, channel_wrappers, prune_channels, strip_channels
from kstruct.pruning.channels_criteria import CRITERIA
from kstruct.pruning.step import Prune
from kstruct.engine.macs import macs
from kstruct.engine.step import StepResult, TrainingStep
from kstruct.engine.training import StepContext

TAYLOR_SAMPLES = 128
logger = logging.getLogger(__name__)


def widths(model: keras.Model) -> dict[str, int]:
    """Filters or units of each Conv/Dense layer, those inside nested models included."""
    found = {}
    for layer in leaf_layers(model):
        value = getattr(layer, "filters", None) or getattr(layer, "units", None)
        if isinstance(value, int):
            found[layer.name] = value
    return found


def nested_models(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if isinstance(layer, keras.Model)]


def size_notes(before: keras.Model, after: keras.Model) -> dict:
    """Params, MACs and the widths that changed, for a step's report row; `flattened` names the
    nested models (a backbone) whose layers now sit at the top level of the smaller model."""
    old, new = widths(before), widths(after)
    notes = {
        "params": [int(before.count_params()), int(after.count_params())],
        "macs": [macs(before), macs(after)],
        "widths": {name: f"{old[name]}->{new[name]}" for name in old if name in new and new[name] != old[name]},
    }
    flattened = [name for name in nested_models(before) if name not in nested_models(after)]
    if flattened:
        logger.info("kstruct: %s flattened into the model: the structure step changed layers inside it",
                    ", ".join(flattened))
        notes["flattened"] = flattened
    return notes


def context_loss(context: StepContext):
    """The loss the user's model trains with (compiled, or given to optimize)."""
    return context.compile_source.loss if context.compile_source is not None else context.loss


class PruneChannels(TrainingStep):
    """Structured pruning: remove `ratio` of each prunable channel group, for real (fewer filters/units).

    The masks tighten over the first 60% of the fine-tuning steps (polynomial, as `prune`),
    the rest recovers; the returned model is the smaller plain one.

    Args:
        ratio: fraction of each group's channels to remove, in [0, 1).
        criterion: "l2", "bn" or "taylor" (see `kstruct.pruning.prune_channels`).
        round_to: kept channels are a multiple of this.
        epochs: fine-tuning epochs (default: optimize's `epochs`).
        layers: which groups (by producer layer name or regex).
        distill: fine-tune from the teacher's class scores as well as the labels.
        **training: `optimizer`, `learning_rate`, `lr_schedule`, `batch_size` (see `TrainingStep`).
    """

    name = "prune_channels"
    search_rank = 20
    positional = ("ratio",)

    def __init__(
        self,
        ratio: float | None = None,
        *,
        criterion: str = "l2",
        round_to: int = 1,
        epochs: int | None = None,
        layers: str | list[str] | None = None,
        distill: bool = False,
        **training,
    ):
        if ratio is None:
            raise ValueError("prune_channels needs a ratio, e.g. prune_channels(0.5).")
        if criterion not in CRITERIA:
            raise ValueError(f"Expected `criterion` to be one of {CRITERIA}. Received: criterion={criterion!r}")
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise ValueError(f"Expected `round_to` to be an integer >= 1. Received: round_to={round_to!r}")
        self.ratio = _check_ratio(ratio)
        self.criterion = criterion
        self.round_to = round_to
        self.layers = layers
        self.init_training(epochs, distill, training)

    @classmethod
    def search_space(cls, hp, space) -> "PruneChannels | None":
        """`auto` tries a ratio (0: off) where the model has a channel group to prune."""
        from kstruct.pruning.channels import channel_groups

        if not channel_groups(space.model).prunable:
            return None
        ratio = hp.Choice("prune_channels", [0.0, 0.25, 0.4, 0.5, 0.6, 0.7, 0.75], default=0.5)
        return cls(ratio) if ratio > 0 else None

    def structure(self, model: keras.Model, context: StepContext) -> keras.Model:
        """The model this step hands on, with its channels removed at once and not fine-tuned:
        what `auto` measures before training (latency and size depend on the widths only)."""
        data = context.train.arrays(limit=TAYLOR_SAMPLES) if self.criterion == "taylor" else None
        schedule = Prune(self.ratio, schedule="constant").pruning_schedule(1)
        masked = prune_channels(
            model, self.ratio, self.criterion, self.round_to, self.layers, schedule, data=data, loss=context_loss(context)
        )
        for wrapper in channel_wrappers(masked):
            wrapper.mask_now(self.ratio)
        return strip_channels(masked)

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        context = self.training_context(context)
        schedule = Prune(self.ratio).pruning_schedule(context.steps())
        data = context.train.arrays(limit=TAYLOR_SAMPLES) if self.criterion == "taylor" else None
        masked = prune_channels(
            model, self.ratio, self.criterion, self.round_to, self.layers, schedule,
            data=data, loss=context_loss(context),
        )
        context.fit(masked, distill=self.distill)
        trained = min(int(keras.ops.convert_to_numpy(w.pruning_step)) for w in channel_wrappers(masked))
        if trained <= schedule.end_step:
            raise PruningError(
                f"{self} trained {trained} step(s), but its masks reach {self.ratio:.0%} at step {schedule.end_step}. "
                "Give it more steps: more training data, more epochs (epochs=...), or a smaller batch_size."
            )
        stripped = strip_channels(masked)
        return StepResult(model=context.compile(stripped), notes=size_notes(model, stripped))
