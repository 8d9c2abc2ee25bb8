"""The one interface every strategy step implements (prune, qat, ptq, search, ...).

As in optax, a step is a small object that transforms a model; `Strategy` chains
them. A step gets the model and a `StepContext` (the user's data, epochs, target,
how to compile and fit), and returns a `StepResult`: the model passed to the next
step and anything the step wants in its report row.

A step is also a config: `get_config()` returns its constructor arguments, and
`str(step)` prints them back in the strategy grammar, so a report's strategy
string re-parses to an equal strategy.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from kstruct.engine.arguments import optional_positive_int_argument
from kstruct.engine.settings import SETTING_NAMES, TrainingSettings
from kstruct.errors import StrategyError

if TYPE_CHECKING:  # keras only for annotations: importing it here would run kstruct's
    import keras    # registration (kstruct/_keras_objects.py) while this module is half-made

    from kstruct.engine.search_info import SpaceInfo
    from kstruct.engine.training import StepContext


@dataclass
class StepResult:
    """What a step hands on.

    Attributes:
        model: the model the next step (and the export) receives.
        notes: extra fields for this step's row in the report (JSON-serializable).
        tflite: a TFLite file the step already produced for the target (e.g. `ptq`),
            used instead of converting `model` again.
    """

    model: keras.Model
    notes: dict[str, Any] = field(default_factory=dict)
    tflite: bytes | None = None


class Step:
    """Base class of strategy steps.

    Subclasses set `name` (the word used in strategy strings) and implement
    `apply`. The class attributes below declare what the step does to the model,
    so `Strategy.validate` can refuse an impossible chain before any work starts.

    Attributes:
        name: the step's word in the grammar (`kstruct.register_step` registers it under this name).
        trains: the step fine-tunes or retrains the weights.
        quantizes: the step hands on a quantized model or file; no step that
            trains or quantizes may follow it.
        targets: the TFLite targets the step can serve, or None for any.
        positional: constructor arguments printed without `name=` (in this order).
        always_shown: arguments printed even when they equal their default.
        search_rank: the step's place in chains `auto` builds (structure 10-29, weights
            30-49, sharing 50-69, quantization 90-99), or None when it is not searched.
    """

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = False
    quantizes: ClassVar[bool] = False
    targets: ClassVar[tuple[str, ...] | None] = None
    positional: ClassVar[tuple[str, ...]] = ()
    always_shown: ClassVar[tuple[str, ...]] = ()
    search_rank: ClassVar[int | None] = None  # where `auto` puts the step in a chain; None: not searched

    def apply(self, model: keras.Model, context: "StepContext") -> StepResult:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this step, `from_config(get_config())`.

        The default reads an attribute of the same name for each `__init__` parameter;
        override it when the step stores its arguments differently.
        """
        config = {}
        for name in _parameters(type(self)):
            if not hasattr(self, name):
                raise NotImplementedError(
                    f"{type(self).__name__} has no attribute `{name}` for its __init__ argument `{name}`; "
                    "store it under that name or override get_config()."
                )
            config[name] = getattr(self, name)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Step":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    __hash__ = None  # steps are mutable configs

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Argument name -> default, for printing only the arguments that differ from it."""
        return _parameters(cls)

    @classmethod
    def search_space(cls, hp: Any, space: "SpaceInfo") -> "Step | None":
        """This step as `auto` should try it in one trial, or None to leave it out of the chain.

        `hp` is a `keras_tuner.HyperParameters`: declare this step's own hyperparameters on
        it (`hp.Choice`, `hp.Float`, ...) and build the step from their values. `space` says
        what the model, target and budget are. The default takes no part in the search;
        a user's `register_step` step joins by overriding this and setting `search_rank`.
        """
        return None

    def export_options(self, model: keras.Model, context: "StepContext") -> dict[str, Any]:
        """Options this step adds to the conversion of `model` for the target (`tflite_export.convert`
        keyword arguments), so that `auto` can time a chain's structure as the step will export it,
        before any training. The default adds none."""
        return {}

    def __str__(self) -> str:
        defaults = self.defaults()
        config = self.get_config()
        shown = [
            (key, value)
            for key, value in config.items()
            if key in self.always_shown or key in self.positional or value != defaults.get(key, inspect.Parameter.empty)
        ]
        heads = [format_value(value) for key, value in shown if key in self.positional and value is not None]
        rest = [f"{key}={format_value(value)}" for key, value in shown if key not in self.positional]
        arguments = heads + rest
        return f"{self.name}({', '.join(arguments)})" if arguments else self.name

    def __repr__(self) -> str:
        return f"<kstruct step {self}>"


class TrainingStep(Step):
    """Base of the steps that fine-tune: their `epochs`, `distill` and training settings, checked once.

    A subclass takes `epochs=None, distill=False, **training` in its `__init__` and calls
    `self.init_training(epochs, distill, training)`; in `apply` it trains through
    `self.training_context(context)`, whose `fit` and `compile` use the step's epochs,
    optimizer, learning rate, schedule and batch size.

    Training settings (every training step): `optimizer` ("adam", "adamw", "sgd"),
    `learning_rate` (the peak rate), `lr_schedule` ("constant", "cosine"), `batch_size`
    (array data). Unset, the step trains as the user's model was compiled.
    """

    trains = True

    def init_training(self, epochs: Any, distill: Any, training: dict[str, Any]) -> None:
        unknown = sorted(set(training) - set(SETTING_NAMES))
        if unknown:
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {unknown[0]!r}")
        self.epochs = optional_positive_int_argument("epochs", epochs)
        if not isinstance(distill, bool):
            raise StrategyError(f"Expected `distill` to be true or false. Received: distill={distill!r}")
        self.distill = distill
        self.settings = TrainingSettings(**training)

    def training_context(self, context: "StepContext") -> "StepContext":
        """`context` with this step's epochs and training settings."""
        return context.for_step(self.epochs, self.settings)

    def check_before_training(self, context: "StepContext") -> None:
        """Raises StrategyError before any work when the settings do not fit the data (`batch_size` on a dataset)."""
        self.training_context(context)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {**_parameters(cls), **{name: None for name in SETTING_NAMES}}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.settings.as_dict()}


def _parameters(cls: type) -> dict[str, Any]:
    """`__init__`'s named parameters and their defaults (`inspect.Parameter.empty` when none)."""
    signature = inspect.signature(cls.__init__)
    return {
        name: parameter.default
        for name, parameter in list(signature.parameters.items())[1:]
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }


def format_value(value: Any) -> str:
    """One argument value in the grammar, so that parsing it gives `value` back."""
    if value is None or isinstance(value, bool):
        return str(value).lower()  # the grammar's words: true, false, none
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise StrategyError(f"Expected a finite number in a strategy. Received: {value}")
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text  # 2.0 prints as 2, as a user writes it
    if isinstance(value, str):
        if "'" not in value:
            return f"'{value}'"
        if '"' not in value:
            return f'"{value}"'
        raise StrategyError(f"A strategy string cannot hold both kinds of quote. Received: {value!r}")
    if isinstance(value, tuple) and len(value) == 2 and all(type(v) is int and v >= 0 for v in value):
        return f"{value[0]}:{value[1]}"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(format_value(v) for v in value)}]"
    raise StrategyError(
        f"A strategy argument must be a number, N:M, string, boolean, None or list. Received: {value!r}"
    )
