"""The `prune` strategy step: wrap, fine-tune with a schedule derived from the data, strip."""

from __future__ import annotations

import keras

from kstruct.errors import PruningError
from kstruct.pruning.prune import never_updated, prune, sparsity, stale_message, strip, wrappers
from kstruct.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kstruct.engine.step import StepResult, TrainingStep
from kstruct.engine.training import StepContext

SCHEDULES = ("polynomial", "constant")
MASK_UPDATES = 16  # how many times the mask is recomputed on the way to the target


class Prune(TrainingStep):
    """Magnitude pruning to `sparsity`, or N:M structured sparsity with `m_by_n`.

    The schedule's steps come from the data and epochs: sparsity rises (polynomial,
    the default) over the first 60% of the fine-tuning steps, and the rest lets
    accuracy recover at the final sparsity. The returned model is stripped: plain
    layers with zeros in their kernels.

    Args:
        sparsity: fraction of weights to zero, in [0, 1); an `(n, m)` pair means `m_by_n`.
        schedule: "polynomial" (gradual) or "constant" (prune at once, keep updating).
        m_by_n: `(n, m)`, e.g. `(2, 4)`; overrides `sparsity`.
        epochs: fine-tuning epochs (default: optimize's `epochs`).
        layers: which layers to prune (a name, a regex, a list of them).
        distill: fine-tune from the teacher's class scores as well as the labels.
        **training: `optimizer`, `learning_rate`, `lr_schedule`, `batch_size` (see `TrainingStep`).
    """

    name = "prune"
    search_rank = 30
    positional = ("sparsity",)

    def __init__(
        self,
        sparsity: float | tuple[int, int] | None = None,
        *,
        schedule: str = "polynomial",
        m_by_n: tuple[int, int] | None = None,
        epochs: int | None = None,
        layers: str | list[str] | None = None,
        distill: bool = False,
        **training,
    ):
        if isinstance(sparsity, (tuple, list)):  # prune(2:4) in a strategy string
            sparsity, m_by_n = None, tuple(sparsity)
        if m_by_n is None and sparsity is None:
            raise ValueError("prune needs a sparsity, e.g. prune(0.75), or an N:M pattern, e.g. prune(2:4).")
        if sparsity is not None and not 0.0 <= float(sparsity) < 1.0:
            raise ValueError(f"Expected `sparsity` in [0, 1). Received: sparsity={sparsity}")
        if schedule not in SCHEDULES:
            raise ValueError(f"Expected `schedule` to be one of {SCHEDULES}. Received: schedule={schedule!r}")
        if m_by_n is not None:
            n, m = (int(v) for v in m_by_n)
            if not 0 < n < m:
                raise ValueError(f"Expected an N:M pattern with 0 < N < M, e.g. 2:4. Received: {n}:{m}")
            m_by_n = (n, m)
        self.sparsity = None if sparsity is None else float(sparsity)
        self.schedule = schedule
        self.m_by_n = m_by_n
        self.layers = layers
        self.init_training(epochs, distill, training)

    @classmethod
    def search_space(cls, hp, space) -> "Prune | None":
        """`auto` tries a sparsity (0: off) only when the budget counts the gzipped file: zeros
        make no LiteRT kernel faster and no raw file smaller."""
        if not space.size_by_gzip:
            return None
        sparsity = hp.Choice("prune", [0.0, 0.5, 0.75, 0.9], default=0.75)
        return cls(sparsity) if sparsity > 0 else None

    def pruning_schedule(self, total_steps: int) -> PruningSchedule:
        """The schedule for a fine-tuning run of `total_steps` optimizer steps."""
        if self.m_by_n is not None:
            n, m = self.m_by_n
            return ConstantSparsity(1.0 - n / m, begin_step=0, frequency=max(1, total_steps // MASK_UPDATES))
        if self.schedule == "constant":
            return ConstantSparsity(self.sparsity, begin_step=0, frequency=max(1, total_steps // MASK_UPDATES))
        ramp = max(1, int(total_steps * 0.6))
        frequency = max(1, ramp // MASK_UPDATES)
        end = max(frequency, ramp // frequency * frequency)  # the final sparsity lands on an update step
        return PolynomialDecay(0.0, self.sparsity, begin_step=0, end_step=end, frequency=frequency)

    def check_before_training(self, context: StepContext) -> None:
        """Raises PruningError when the schedule cannot reach its sparsity in the steps it will get.

        The step count is known from the data, batch size and epochs before any
        training, so a run that would end dense fails now, not after its fine-tuning
        (on a few dozen samples an epoch is one batch, and a gradual schedule's first
        mask update, at step 0, is at 0% sparsity).
        """
        if self.m_by_n is not None:  # N:M applies in full from step 0
            return
        context = self.training_context(context)
        epochs, steps = context.epochs, context.steps()
        reached = self.pruning_schedule(steps).sparsity_after(steps) or 0.0
        if self.sparsity > 0 and reached < 0.9 * self.sparsity:
            at_once = Prune(**{**self.get_config(), "schedule": "constant"})
            raise PruningError(
                f"{self} would reach {reached:.1%} sparsity, not {self.sparsity:.0%}: its schedule has only {steps} "
                f"optimizer step(s) ({epochs} epoch(s) of {steps // max(epochs, 1)} batch(es)). Give it more steps "
                f"(more training data, more epochs, or a smaller batch_size), or prune at once: {at_once}."
            )

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        self.check_before_training(context)
        context = self.training_context(context)
        epochs = context.epochs
        schedule = self.pruning_schedule(context.steps())
        wrapped = prune(model, schedule=schedule, m_by_n=self.m_by_n, layers=self.layers)
        context.fit(wrapped, distill=self.distill)
        stale = never_updated(wrapped)
        if stale:
            raise PruningError(stale_message(stale))
        self._check_reached(wrapped, context.steps(), epochs)
        stripped = strip(wrapped, check_updated=False)
        measured = sparsity(stripped)
        return StepResult(
            model=context.compile(stripped),
            notes={"schedule": repr(schedule), "pruned_layers": measured.as_dict()["layers"]},
        )

    def _check_reached(self, wrapped: keras.Model, steps: int, epochs: int) -> None:
        """Raises PruningError when the schedule ran out of steps before reaching its sparsity.

        On a few dozen samples an epoch is one or two batches, and a gradual schedule
        never gets past its first mask update: the model would come back dense.
        """
        if self.m_by_n is not None:  # N:M applies in full from step 0 (layers it cannot fit stay dense)
            return
        target = self.sparsity
        layers = [w.layer.name for w in wrappers(wrapped)]
        measured = [layer for layer in sparsity(wrapped).layers if layer.name in layers]
        size = sum(layer.size for layer in measured)
        reached = sum(layer.zeros for layer in measured) / size if size else 0.0
        if target > 0 and reached < 0.9 * target:
            raise PruningError(
                f"{self} reached {reached:.1%} sparsity, not {target:.0%}: its schedule had only {steps} "
                f"optimizer step(s) ({epochs} epoch(s) of {steps // max(epochs, 1)} batch(es)). Give it more "
                "steps: more training data, more epochs (epochs=...), or a smaller batch_size."
            )

    def get_config(self) -> dict:
        """N:M comes back as the `(n, m)` sparsity, which prints as `prune(2:4)`."""
        return {
            "sparsity": self.m_by_n if self.m_by_n is not None else self.sparsity,
            "schedule": self.schedule,
            "epochs": self.epochs,
            "layers": self.layers,
            "distill": self.distill,
            **self.settings.as_dict(),
        }
