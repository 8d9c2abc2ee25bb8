"""`Strategy`: a chain of steps, and the string grammar that builds one from registered steps.

Grammar (whitespace is free):

    strategy := step ("+" step)*
    step     := NAME ["(" [argument ("," argument)*] ")"]
    argument := [NAME "="] value
    value    := NUMBER | N:M | 'string' | "string" | "[" [value ("," value)*] "]"
              | NAME (true/false/none, or a bare word)

Limits, so that no input can hang the parser or leak another exception: at most
`MAX_LENGTH` characters, lists nested at most `MAX_DEPTH` deep, number literals of at
most `MAX_NUMBER` characters, and finite numbers only.

`"prune(0.75) + qat"` parses into exactly the objects `Strategy([Prune(0.75), QAT()])`,
and `str(strategy)` prints a string that parses back to an equal strategy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Union

from kstruct.errors import StrategyError
from kstruct.engine.registry import KNOWN_STEPS, known_names, step_class
from kstruct.engine.step import Step

_WORDS = {"true": True, "false": False, "none": None}  # the literals; registry.RESERVED_WORDS
MAX_LENGTH = 10_000  # characters in a strategy string; a real one is a few dozen
MAX_DEPTH = 16  # nesting of list literals
MAX_NUMBER = 40  # characters in one number literal (Python refuses ints of over 4,300 digits)
_CONTEXT = 20  # characters of the input shown on each side of the marked token
_MARKED = 40  # characters of the marked token (or step) shown

# One alternative per token kind, whitespace included: each match consumes at least one
# character and never rescans what an earlier match consumed, so tokenizing is linear.
_TOKEN = re.compile(
    r"""
        (?P<space>\s+)
      | (?P<ratio>[0-9]+:[0-9]+)
      | (?P<number>[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?)
      | (?P<string>'[^']*'|"[^"]*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[()\[\]+,=])
      | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class _Token:
    kind: str
    text: str
    start: int


@dataclass
class _Call:
    """One parsed `name(arguments)`, before its step class is imported."""

    name: _Token
    end: _Token
    args: list
    kwargs: dict


def _tokens(text: str) -> list[_Token]:
    return [
        _Token(match.lastgroup, match.group(), match.start())
        for match in _TOKEN.finditer(text)
        if match.lastgroup != "space"
    ]


def _clip(text: str, limit: int = _CONTEXT, *, from_end: bool = False) -> str:
    """At most `limit` characters of `text` on one line, '...' where it was cut.

    Line breaks and other unprintable characters show as Python escapes (a newline as
    `\\n`), so an error never spans lines or echoes a long input. Reads only what it shows.
    """
    shown, size = [], 0
    for char in reversed(text) if from_end else text:
        piece = char if char.isprintable() else repr(char)[1:-1]
        if size + len(piece) > limit:
            shown.append("...")
            break
        shown.append(piece)
        size += len(piece)
    return "".join(reversed(shown) if from_end else shown)


def _found(token: _Token | None) -> str:
    return "the end" if token is None else f"'{_clip(token.text)}'"


def _error(text: str, token: _Token | None, message: str, width: int | None = None) -> StrategyError:
    """A one-line StrategyError that marks the offending token with >>> <<< in a short excerpt of
    the input, and lists the known steps."""
    start = len(text) if token is None else token.start
    end = start + (width or (0 if token is None else len(token.text)))
    where = "at the end" if token is None else f"at character {start + 1}"
    marked = (
        f"{_clip(text[max(0, start - _CONTEXT - 1):start], from_end=True)}>>>{_clip(text[start:end], _MARKED)}<<<"
        f"{_clip(text[end:end + _CONTEXT + 1])}"
    )
    return StrategyError(f"{message.rstrip('.')} ({where}: {marked}). Known steps: {known_names()}.")


class _Parser:
    """Reads the grammar into `_Call`s; imports nothing, so a malformed string is refused before any
    step module (and Keras) loads."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self, ahead: int = 0) -> _Token | None:
        at = self.position + ahead
        return self.tokens[at] if at < len(self.tokens) else None

    def take(self) -> _Token | None:
        token = self.peek()
        self.position += 1
        return token

    def fail(self, token: _Token | None, message: str) -> StrategyError:
        return _error(self.text, token, f"Invalid strategy: {message}")

    def expect(self, text: str, what: str) -> _Token:
        token = self.take()
        if token is None or token.text != text:
            raise self.fail(token, f"expected {what}, found {_found(token)}.")
        return token

    def strategy(self) -> list[_Call]:
        if not self.tokens:
            raise self.fail(None, "it is empty; give at least one step, e.g. 'prune(0.75)'.")
        calls = [self.call()]
        while self.peek() is not None:
            self.expect("+", "'+' between steps")
            calls.append(self.call())
        return calls

    def call(self) -> _Call:
        token = self.take()
        if token is None or token.kind != "name":
            raise self.fail(token, f"expected a step name, found {_found(token)}.")
        if token.text.lower() not in KNOWN_STEPS:
            raise self.fail(token, f"unknown step '{_clip(token.text)}'.")
        args, kwargs = [], {}
        if self.peek() is not None and self.peek().text == "(":
            args, kwargs = self.arguments()
        return _Call(token, self.tokens[self.position - 1], args, kwargs)

    def arguments(self) -> tuple[list, dict]:
        self.expect("(", "'('")
        args, kwargs = [], {}
        if self.peek() is not None and self.peek().text == ")":
            self.take()
            return args, kwargs
        while True:
            token, following = self.peek(), self.peek(1)
            if token is not None and token.kind == "name" and following is not None and following.text == "=":
                if token.text in kwargs:
                    raise self.fail(token, f"keyword argument '{_clip(token.text)}' is given twice.")
                self.position += 2
                kwargs[token.text] = self.value(depth=0)
            elif kwargs:
                raise self.fail(token, "a positional argument follows a keyword argument.")
            else:
                args.append(self.value(depth=0))
            closing = self.take()
            if closing is not None and closing.text == ")":
                return args, kwargs
            if closing is None or closing.text != ",":
                raise self.fail(closing, f"expected ',' or ')', found {_found(closing)}.")

    def value(self, depth: int) -> Any:
        token = self.take()
        if token is None:
            raise self.fail(None, "expected a value, found the end.")
        if token.kind in ("number", "ratio") and len(token.text) > MAX_NUMBER:
            raise self.fail(
                token, f"a number of {len(token.text)} characters; numbers have at most {MAX_NUMBER}."
            )
        if token.kind == "number":
            if not any(c in token.text for c in ".eE"):
                return int(token.text)
            number = float(token.text)
            if not math.isfinite(number):  # 1e309 reads as inf, which no step can use
                raise self.fail(token, f"expected a finite number, found '{_clip(token.text)}'.")
            return number
        if token.kind == "ratio":
            n, m = token.text.split(":")
            return (int(n), int(m))
        if token.kind == "string":
            return token.text[1:-1]
        if token.kind == "name":
            return _WORDS.get(token.text.lower(), token.text)
        if token.text == "[":
            if depth >= MAX_DEPTH:
                raise self.fail(token, f"lists nest at most {MAX_DEPTH} deep.")
            return self.items(depth + 1)
        raise self.fail(token, f"expected a value, found {_found(token)}.")

    def items(self, depth: int) -> list:
        """The rest of a `[...]` list literal, after its opening bracket."""
        items = []
        if self.peek() is not None and self.peek().text == "]":
            self.take()
            return items
        while True:
            items.append(self.value(depth))
            closing = self.take()
            if closing is not None and closing.text == "]":
                return items
            if closing is None or closing.text != ",":
                raise self.fail(closing, f"expected ',' or ']' in a list, found {_found(closing)}.")


def _build(text: str, call: _Call) -> Step:
    """The step object of one parsed call; the step's own argument checks become a StrategyError
    that marks the call."""
    name = call.name
    width = call.end.start + len(call.end.text) - name.start
    found = step_class(name.text)
    try:
        return found(*call.args, **call.kwargs)
    except (TypeError, ValueError, ArithmeticError) as err:  # StrategyError is a ValueError
        reason = _clip(str(err), 100)
        raise _error(text, name, f"Invalid arguments for step '{name.text}': {reason}", width) from None


def _parse(text: str) -> list[Step]:
    if not isinstance(text, str):
        raise StrategyError(f"Expected a strategy string. Received: an object of type {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise StrategyError(
            f"Invalid strategy: it is {len(text):,} characters long, over the limit of {MAX_LENGTH:,} "
            f"(it starts '{_clip(text.lstrip())}')."
        )
    return [_build(text, call) for call in _Parser(text).strategy()]


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
        """Parses the strategy grammar; errors point at the offending token and list the known steps.

        The parser is linear in the input and bounded: at most `MAX_LENGTH` characters,
        lists nested at most `MAX_DEPTH` deep, number literals of at most `MAX_NUMBER`
        characters, finite numbers only. A syntax error imports no step module.

        Raises:
            StrategyError: for every malformed string or bad step argument, on one line
                with a short, escaped excerpt of the input.
        """
        return cls(_parse(text))

    def __add__(self, other: Union["Strategy", Step]) -> "Strategy":
        extra = other.steps if isinstance(other, Strategy) else [other]
        return Strategy(self.steps + extra)

    def __iter__(self):
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Strategy) and self.steps == other.steps

    __hash__ = None

    def __str__(self) -> str:
        return " + ".join(str(step) for step in self.steps)

    def validate(self, target: str) -> None:
        """Refuses a chain that cannot work, before any training or conversion.

        Reads what each step declares (`trains`, `quantizes`, `targets`): nothing that
        trains or quantizes may follow a quantizing step, and each step must serve `target`.

        Raises:
            StrategyError: naming the step at fault and the fix.
        """
        quantized_by = None
        for step in self.steps:
            if quantized_by is not None and (step.trains or step.quantizes):
                does = "trains" if step.trains else "quantizes"
                fix = (
                    f"quantize once, as the last step: '{quantized_by}'"
                    if type(step) is type(quantized_by)
                    else f"put {step} before {quantized_by}"
                )
                raise StrategyError(
                    f"Invalid strategy '{self}': {step} {does} the model after {quantized_by} has quantized it; {fix}."
                )
            own = step.get_config().get("target")  # a step's own target= option, e.g. qat(target='int8')
            for wanted in (target, own) if own is not None else (target,):
                if step.targets is not None and wanted not in step.targets:
                    raise StrategyError(
                        f"Invalid strategy '{self}' for target '{wanted}': {step.name} serves only the targets "
                        f"{', '.join(step.targets)}. Pass one of them as target (CLI: --target), or drop {step.name}."
                    )
            if step.quantizes:
                quantized_by = step

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
