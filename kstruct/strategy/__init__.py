"""Strategies: the string grammar (`"prune(0.75) + qat"`) to and from chains of steps, and the
step registry that names them (`kstruct/strategy/grammar.py`)."""

from kstruct.strategy.grammar import KNOWN_STEPS, Strategy, as_strategy, format_value, register_step, step_class

__all__ = ["KNOWN_STEPS", "Strategy", "as_strategy", "format_value", "register_step", "step_class"]
