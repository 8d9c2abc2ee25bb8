"""Strategies: the string grammar (`"prune(0.75) + qat"`) to and from chains of steps; the
step registry that names them lives in the engine (`kstruct/engine/registry.py`)."""

from kstruct.engine.registry import KNOWN_STEPS, register_step, step_class
from kstruct.engine.step import format_value
from kstruct.strategy.grammar import Strategy, as_strategy

__all__ = ["KNOWN_STEPS", "Strategy", "as_strategy", "format_value", "register_step", "step_class"]
