"""`auto`'s search space: the chain the registered steps declare, and the training settings.

Nothing here knows a technique: every registered step with a `search_rank` is asked for
itself (`Step.search_space`), in rank order (structure, then weights, then sharing, then
quantization), so a step added later, or a user's, joins by declaring its space.
"""

from __future__ import annotations

from typing import Any

from kstruct.engine.search_info import SpaceInfo
from kstruct.engine.settings import LR_SCHEDULES, OPTIMIZERS
from kstruct.engine.step import Step, TrainingStep
from kstruct.engine.registry import KNOWN_STEPS, step_class
from kstruct.strategy import Strategy

BATCH_SIZES = (16, 32, 64, 128)
# The hyperparameters of a trial's fine-tuning (`training_settings`); every other one shapes the chain.
TRAINING_SETTINGS = ("optimizer", "learning_rate", "lr_schedule", "distill", "batch_size", "epochs")


def searched_steps() -> list[type[Step]]:
    """The registered step classes that take part in `auto`, in chain order."""
    found = []
    for name in KNOWN_STEPS:
        cls = step_class(name)
        if cls is not None and cls.search_rank is not None:
            found.append(cls)
    return sorted(found, key=lambda cls: (cls.search_rank, cls.name))


def training_settings(hp: Any, space: SpaceInfo, *, epochs_from_tuner: int | None = None) -> dict[str, Any]:
    """The fine-tuning of every training step in one trial: epochs, optimizer, learning rate,
    schedule, batch size (array data) and distillation from the original.

    Hyperband decides the epochs itself (`epochs_from_tuner`), as its fidelity.
    """
    settings: dict[str, Any] = {
        "optimizer": hp.Choice("optimizer", list(OPTIMIZERS), default="adam"),
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3),
        "lr_schedule": hp.Choice("lr_schedule", list(LR_SCHEDULES), default="constant"),
    }
    if space.distillable:
        settings["distill"] = hp.Boolean("distill", default=False)
    if space.array_data:
        settings["batch_size"] = hp.Choice("batch_size", list(BATCH_SIZES), default=32)
    if epochs_from_tuner is not None:
        settings["epochs"] = min(int(epochs_from_tuner), space.max_epochs)
    else:
        settings["epochs"] = hp.Int("epochs", 1, space.max_epochs, default=space.max_epochs)
    return settings


def chain(hp: Any, space: SpaceInfo, *, epochs_from_tuner: int | None = None) -> list[Step]:
    """The chain one trial runs: each searched step as it declares itself, every training
    step with the trial's training settings. May be empty (nothing but the export)."""
    steps = [step for cls in searched_steps() if (step := cls.search_space(hp, space)) is not None]
    if any(isinstance(step, TrainingStep) for step in steps):
        settings = training_settings(hp, space, epochs_from_tuner=epochs_from_tuner)
        steps = [
            type(step).from_config({**step.get_config(), **settings}) if isinstance(step, TrainingStep) else step
            for step in steps
        ]
    if steps:
        Strategy(steps).validate(space.target)
    return steps


def chain_text(steps: list[Step]) -> str:
    """The chain in the strategy grammar ("" for no step: the original, exported)."""
    return " + ".join(str(step) for step in steps)
