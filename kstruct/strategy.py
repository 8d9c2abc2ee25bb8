"""`Strategy`: a chain of steps, and the string grammar that builds one.

Grammar (whitespace is free):

    strategy := step ("+" step)*
    step     := NAME ["(" [argument ("," argument)*] ")"]
    argument := [NAME "="] value
    value    := NUMBER | N:M | 'string' | "string" | NAME (true/false/none, or a bare word)

`"prune(0.75) + qat"` parses into exactly the objects `Strategy([Prune(0.75), QAT()])`.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Iterable, Union

from kstruct.errors import StrategyError
from kstruct.step import Step

# Step name -> "module:class". A technique joins the grammar by adding one entry here;
# its module is imported only when a strategy uses it (search pulls in keras_tuner).
KNOWN_STEPS: dict[str, str] = {
    "prune": "kstruct.pruning.step:Prune",
    "qat": "kstruct.quantization.step:QAT",
    "ptq": "kstruct.quantization.step:PTQ",
    "search": "kstruct.search.step:Search",
    "cluster": "kstruct.clustering.step:Cluster",
}


def step_class(name: str) -> type[Step] | None:
    """The step class for a name in a strategy string, or None if there is none."""
    where = KNOWN_STEPS.get(name.lower())
    if where is None:
        return None
    module, _, attribute = where.partition(":")
    return getattr(importlib.import_module(module), attribute)

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<ratio>\d+:\d+)
      | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
      | (?P<string>'[^']*'|"[^"]*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[()+,=])
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_WORDS = {"true": True, "false": False, "none": None}


@dataclass
class _Token:
    kind: str
    text: str
    start: int


def _tokens(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None:
            continue
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
    return tokens


def _known() -> str:
    return ", ".join(sorted(KNOWN_STEPS))


def _error(text: str, token: _Token | None, message: str, width: int | None = None) -> StrategyError:
    """A one-line StrategyError that marks the offending token with >>> <<< and lists the known steps."""
    start = len(text) if token is None else token.start
    end = start + (width or (0 if token is None else len(token.text)))
    where = "at the end" if token is None else f"at character {start + 1}"
    marked = f"{text[:start]}>>>{text[start:end]}<<<{text[end:]}"
    return StrategyError(f"{message.rstrip('.')} ({where}: {marked}). Known steps: {_known()}.")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> _Token | None:
        token = self.peek()
        self.position += 1
        return token

    def expect(self, text: str, what: str) -> _Token:
        token = self.take()
        if token is None or token.text != text:
            found = "the end" if token is None else f"'{token.text}'"
            raise _error(self.text, token, f"Invalid strategy: expected {what}, found {found}.")
        return token

    def strategy(self) -> list[Step]:
        if not self.tokens:
            raise _error(self.text, None, "Invalid strategy: it is empty; give at least one step, e.g. 'prune(0.75)'.")
        steps = [self.step()]
        while self.peek() is not None:
            self.expect("+", "'+' between steps")
            steps.append(self.step())
        return steps

    def step(self) -> Step:
        token = self.take()
        if token is None or token.kind != "name":
            found = "the end" if token is None else f"'{token.text}'"
            raise _error(self.text, token, f"Invalid strategy: expected a step name, found {found}.")
        found = step_class(token.text)
        if found is None:
            raise _error(self.text, token, f"Invalid strategy: unknown step '{token.text}'.")
        args, kwargs = [], {}
        if self.peek() is not None and self.peek().text == "(":
            args, kwargs = self.arguments()
        end = self.tokens[self.position - 1]
        width = end.start + len(end.text) - token.start
        try:
            return found(*args, **kwargs)
        except (TypeError, ValueError) as err:
            raise _error(self.text, token, f"Invalid arguments for step '{token.text}': {err}", width) from None

    def arguments(self) -> tuple[list, dict]:
        self.expect("(", "'('")
        args, kwargs = [], {}
        if self.peek() is not None and self.peek().text == ")":
            self.take()
            return args, kwargs
        while True:
            token = self.peek()
            following = self.tokens[self.position + 1] if self.position + 1 < len(self.tokens) else None
            if token is not None and token.kind == "name" and following is not None and following.text == "=":
                self.take()
                self.take()
                kwargs[token.text] = self.value()
            elif kwargs:
                raise _error(self.text, token, "Invalid strategy: a positional argument follows a keyword argument.")
            else:
                args.append(self.value())
            closing = self.take()
            if closing is not None and closing.text == ")":
                return args, kwargs
            if closing is None or closing.text != ",":
                found = "the end" if closing is None else f"'{closing.text}'"
                raise _error(self.text, closing, f"Invalid strategy: expected ',' or ')', found {found}.")

    def value(self):
        token = self.take()
        if token is None:
            raise _error(self.text, None, "Invalid strategy: expected a value, found the end.")
        if token.kind == "number":
            return float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
        if token.kind == "ratio":
            n, m = token.text.split(":")
            return (int(n), int(m))
        if token.kind == "string":
            return token.text[1:-1]
        if token.kind == "name":
            return _WORDS.get(token.text.lower(), token.text)
        raise _error(self.text, token, f"Invalid strategy: expected a value, found '{token.text}'.")


class Strategy:
    """An ordered chain of steps, run one after the other by `kstruct.optimize`.

    Build one from a string, `Strategy.parse("prune(0.75) + qat")`, or from step
    objects, `Strategy([Prune(0.75)])`. `str(strategy)` gives the string back.
    """

    def __init__(self, steps: Iterable[Step]):
        self.steps = list(steps)
        if not self.steps:
            raise StrategyError("Expected at least one step in a Strategy. Received none.")
        for step in self.steps:
            if not isinstance(step, Step):
                raise StrategyError(
                    f"Expected kstruct steps in a Strategy. Received: an object of type {type(step).__name__}"
                )

    @classmethod
    def parse(cls, text: str) -> "Strategy":
        """Parses the strategy grammar; errors point at the offending token and list the known steps."""
        return cls(_Parser(text).strategy())

    def __add__(self, other: Union["Strategy", Step]) -> "Strategy":
        extra = other.steps if isinstance(other, Strategy) else [other]
        return Strategy(self.steps + extra)

    def __iter__(self):
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __str__(self) -> str:
        return " + ".join(str(step) for step in self.steps)

    def __repr__(self) -> str:
        return f"Strategy({str(self)!r})"


def as_strategy(strategy: Union[str, Strategy, Step, Iterable[Step]]) -> Strategy:
    """Accepts a string, a Strategy, one step or a list of steps."""
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str):
        return Strategy.parse(strategy)
    if isinstance(strategy, Step):
        return Strategy([strategy])
    if isinstance(strategy, (list, tuple)):
        return Strategy(strategy)
    raise StrategyError(
        f"Expected a strategy string such as 'prune(0.75)', a kstruct.Strategy or step objects. "
        f"Received: an object of type {type(strategy).__name__}"
    )
