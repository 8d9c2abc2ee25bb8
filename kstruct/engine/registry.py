"""The step registry: the word of each step in strategy strings, and its class.

It lives in the engine, beside the `Step` contract, so that the grammar (`kstruct.strategy`) and
`auto`'s search space both read one table. Built-in steps are named as "module:Class" strings and
imported on first use, so `import kstruct` does not pull in keras_tuner.
"""

from __future__ import annotations

import importlib
import types
from typing import Mapping

from kstruct.errors import StrategyError
from kstruct.engine.step import Step

RESERVED_WORDS = ("true", "false", "none")  # the grammar's literals, so never step names

# Step name -> the class, or "module:Class" for a built-in imported only when a strategy
# uses it (search pulls in keras_tuner).
_REGISTRY: dict[str, type[Step] | str] = {}

# Read-only view of the registered step names (kept public for back-compat; use register_step to add one).
KNOWN_STEPS: Mapping[str, type[Step] | str] = types.MappingProxyType(_REGISTRY)


def register_step(name: str, cls: type[Step] | str, *, override: bool = False) -> None:
    """Makes `name(...)` in strategy strings build a `cls`.

    Args:
        name: the word in the grammar, e.g. `"cluster"` (a Python identifier); the class's
            own `name` must be the same.
        cls: a `Step` subclass, or `"module:Class"` to import it on first use.
        override: replace a step already registered under `name`.

    Raises:
        StrategyError: if the name is not an identifier, is taken, or `cls` is not a Step.

    Example:
        class Freeze(kstruct.Step):
            name = "freeze"
            ...
        kstruct.register_step("freeze", Freeze)
        kstruct.optimize(model, "freeze + qat", ...)
    """
    if not isinstance(name, str) or not name.isidentifier() or name.lower() in RESERVED_WORDS:
        raise StrategyError(
            f"Expected a step name that is a Python identifier other than true/false/none. Received: name={name!r}"
        )
    if isinstance(cls, str):
        if ":" not in cls:
            raise StrategyError(f"Expected a Step class or 'module:Class'. Received: cls={cls!r}")
    elif not (isinstance(cls, type) and issubclass(cls, Step)):
        raise StrategyError(f"Expected a subclass of kstruct.Step. Received: cls={cls!r}")
    elif not cls.name:  # the user's class is theirs: kstruct does not set attributes on it
        raise StrategyError(
            f"Step class {cls.__name__} has no `name`; set name = {name!r} on the class before registering it"
        )
    elif cls.name != name:
        raise StrategyError(
            f"Step class {cls.__name__} has name={cls.name!r}, but is registered as {name!r}; "
            "register it under its own name"
        )
    key = name.lower()
    if key in _REGISTRY and _REGISTRY[key] != cls and not override:
        raise StrategyError(f"A step named {name!r} is already registered; pass override=True to replace it")
    _REGISTRY[key] = cls


for _name, _where in (
    ("prune", "kstruct.pruning.step:Prune"),
    ("qat", "kstruct.quantization.step:QAT"),
    ("ptq", "kstruct.quantization.step:PTQ"),
    ("search", "kstruct.search.step:Search"),
    ("distill", "kstruct.distillation.step:Distill"),
    ("cluster", "kstruct.clustering.step:Cluster"),
    ("prune_channels", "kstruct.pruning.channels_step:PruneChannels"),
    ("drop_blocks", "kstruct.pruning.blocks_step:DropBlocks"),
    ("factorize", "kstruct.factorize.step:Factorize"),
    ("auto", "kstruct.auto.step:Auto"),
):
    register_step(_name, _where)


def step_class(name: str) -> type[Step] | None:
    """The step class for a name in a strategy string, or None if there is none."""
    where = _REGISTRY.get(name.lower())
    if where is None or not isinstance(where, str):
        return where
    module, _, attribute = where.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if not (isinstance(found, type) and issubclass(found, Step)):
        raise StrategyError(f"{where} registered as step {name!r} is not a subclass of kstruct.Step")
    return found


def known_names() -> str:
    """The registered step names, sorted and comma-separated, as error messages list them."""
    return ", ".join(sorted(_REGISTRY))
