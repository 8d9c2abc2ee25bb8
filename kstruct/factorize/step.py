"""The `factorize` strategy step: replace layers by their low-rank factors, then fine-tune."""

from __future__ import annotations

import keras

from kstruct.engine.macs import macs
from kstruct.engine.step import StepResult, TrainingStep
from kstruct.engine.training import StepContext
from kstruct.errors import FactorizationError
from kstruct.factorize.plan import FactorizationPlan, check_amount, factorizable_layers, plan

SEARCHED_RANKS = (0.0, 0.25, 0.5)  # 0: off


class Factorize(TrainingStep):
    """Low-rank factorization: each Dense, Conv1D, Conv2D and Embedding layer where it pays becomes a chain
    of smaller plain layers (see `kstruct.factorize.decompose`), then the model fine-tunes.

    It shrinks what channel pruning cannot touch (a transformer's feed-forward, the Dense layers
    before a model output, an Embedding), and the result needs no strip. The report notes
    params and MACs before and after, and per layer the form, rank, energy kept, params and MACs;
    the layers left alone are named with the reason.

    Args:
        rank: fraction of each layer's full rank kept, in (0, 1].
        energy: instead of `rank`, the fraction of each layer's squared singular values kept.
        layers: which layers (a name, a regex, a list of them); default: all but those giving a model output.
        only_if_cheaper: leave alone a layer whose factorized form costs at least as many MACs.
        epochs: fine-tuning epochs (default: optimize's `epochs`).
        distill: fine-tune from the teacher's class scores as well as the labels.
        **training: `optimizer`, `learning_rate`, `lr_schedule`, `batch_size` (see `TrainingStep`).
    """

    name = "factorize"
    search_rank = 25  # a structure step, after prune_channels: it shrinks what channel pruning must leave
    positional = ("rank",)

    def __init__(
        self,
        rank: float | None = None,
        *,
        energy: float | None = None,
        layers: str | list[str] | None = None,
        only_if_cheaper: bool = True,
        epochs: int | None = None,
        distill: bool = False,
        **training,
    ):
        self.rank, self.energy = check_amount(rank, energy)
        if not isinstance(only_if_cheaper, bool):
            raise ValueError(f"Expected `only_if_cheaper` to be true or false. Received: only_if_cheaper={only_if_cheaper!r}")
        self.layers = layers
        self.only_if_cheaper = only_if_cheaper
        self.init_training(epochs, distill, training)

    def plan(self, model: keras.Model) -> FactorizationPlan:
        """What this step does to `model`'s layers; an error when it would change none."""
        planned = plan(model, rank=self.rank, energy=self.energy, layers=self.layers, only_if_cheaper=self.only_if_cheaper)
        if not planned.layers:
            reasons = "; ".join(f"{name}: {why}" for name, why in planned.skipped.items())
            raise FactorizationError(f"{self} factorizes no layer of model `{model.name}` ({reasons}).")
        return planned

    @classmethod
    def search_space(cls, hp, space) -> "Factorize | None":
        """`auto` tries a rank fraction (0: off) where some layer of the model gets cheaper factorized."""
        if not factorizable_layers(space.model):
            return None
        try:
            cls(SEARCHED_RANKS[-1]).plan(space.model)
        except FactorizationError:
            return None
        rank = hp.Choice("factorize", list(SEARCHED_RANKS), default=0.0)
        return cls(rank) if rank > 0 else None

    def structure(self, model: keras.Model, context: StepContext) -> keras.Model:
        """The factorized model, not fine-tuned: what `auto` times before training."""
        return self.plan(model).apply(model)

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        planned = self.plan(model)
        planned.log()
        factorized = planned.apply(model)
        context = self.training_context(context)
        context.fit(factorized, distill=self.distill)
        notes = {
            "params": [int(model.count_params()), int(factorized.count_params())],
            "macs": [macs(model), macs(factorized)],
            **planned.notes(),
        }
        return StepResult(model=context.compile(factorized), notes=notes)
