"""Property-based fuzzing of the strategy parser: any string either parses or raises StrategyError,
fast, with a short one-line message; whatever parses prints back to an equal strategy.

Two kinds of input: random text, and grammar-shaped strings built from step names, argument
names, numbers (huge, non-finite, over-long), N:M, quoted strings, nested lists, whitespace
with line breaks, and stray punctuation, so most examples get past the tokenizer and reach
the steps' own argument checks.
"""

import functools
import gc
import inspect
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kstruct
from kstruct import Strategy, StrategyError
from kstruct.strategy import step_class

MAX_SECONDS = 1.0
MAX_MESSAGE = 400  # characters: the longest hold a step's own message (clipped at 100) and the known steps
FUZZ = settings(
    max_examples=250,
    deadline=1000,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module", autouse=True)
def step_modules_loaded():
    """Imports every built-in step class once, so no example is timed importing Keras or keras_tuner."""
    for name in kstruct.KNOWN_STEPS:
        step_class(name)


def check(text: str) -> None:
    """The property: parse within MAX_SECONDS, to a strategy that prints back, or to a one-line StrategyError."""
    # CPU time of this thread (other processes on the machine do not count), with the garbage collector
    # off: a full collection of a test worker's heap (TensorFlow loaded) took 1.9 s inside one parse.
    gc.disable()
    try:
        start = time.thread_time()
        try:
            strategy = Strategy.parse(text)
        except StrategyError as err:
            message = str(err)
            assert len(message.splitlines()) == 1, message
            assert len(message) <= MAX_MESSAGE, message
        else:
            printed = str(strategy)
            assert Strategy.parse(printed) == strategy, printed
        assert time.thread_time() - start < MAX_SECONDS, repr(text[:200])
    finally:
        gc.enable()


STEP_NAMES = sorted(kstruct.KNOWN_STEPS)
OTHER_NAMES = ["prun", "Prune", "QAT", "true", "x"]  # a typo, other case (accepted), a value word
ARGUMENT_NAMES = [
    "sparsity", "schedule", "m_by_n", "epochs", "layers", "distill", "n_clusters", "init", "per_channel",
    "preserve_sparsity", "entropy_weight", "target", "samples", "trials", "latency_ms", "tflite_bytes",
    "params", "tuner", "plot", "temperature", "alpha", "ratio", "criterion", "round_to", "n", "colour", "self",
]
WORDS = [
    "true", "false", "none", "True", "inf", "nan", "infinity", "polynomial", "constant", "kmeans++", "linear",
    "int8", "edgetpu", "random", "l2", "taylor", "loss",
]
WHITESPACE = st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2028", max_size=3)
PUNCTUATION = st.sampled_from(list("()[]+,=:'\".-;{}\\#") + ["\x00", "\n", "é", "\u202e"])

NUMBERS = st.one_of(
    st.integers(-5, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),  # also 'inf', 'nan', '1e+300'
    st.floats(0, 1).map(repr),
    st.sampled_from(["1e309", "-1e309", "1e-400", "0.5", ".5", "5.", "+3", "-0", "1E3", "0.99999999999"]),
    st.integers(10**20, 10**80).map(str),  # over the length cap from 41 digits
    st.integers(1, 60).map(lambda digits: "9" * digits),
)
RATIOS = st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)).map(lambda nm: f"{nm[0]}:{nm[1]}")
QUOTED = st.tuples(st.text(max_size=12), st.sampled_from("'\"")).map(lambda tq: f"{tq[1]}{tq[0]}{tq[1]}")
SCALARS = st.one_of(NUMBERS, RATIOS, QUOTED, st.sampled_from(WORDS))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4).map(lambda items: f"[{', '.join(items)}]"),
    max_leaves=12,
)
DEEP_LISTS = st.integers(0, 40).map(lambda depth: "[" * depth + "1" + "]" * depth)


def value() -> st.SearchStrategy[str]:
    """Mostly plain values, one in eight a deep list (at the depth cap and past it)."""
    return st.integers(0, 7).flatmap(lambda pick: DEEP_LISTS if pick == 0 else VALUES)


@functools.lru_cache(maxsize=None)
def keywords(name: str) -> list[str]:
    """A known step's own argument names (so that most examples reach its checks), else ARGUMENT_NAMES."""
    found = kstruct.KNOWN_STEPS.get(name) and step_class(name)
    return list(inspect.signature(found.__init__).parameters)[1:] if found else ARGUMENT_NAMES


@st.composite
def keyword_argument(draw, name: str) -> str:
    keyword = draw(st.sampled_from(keywords(name) if draw(st.integers(0, 3)) else ARGUMENT_NAMES))
    return f"{keyword}{draw(WHITESPACE)}={draw(WHITESPACE)}{draw(value())}"


@st.composite
def step(draw) -> str:
    name = draw(st.sampled_from(OTHER_NAMES if draw(st.integers(0, 5)) == 0 else STEP_NAMES))
    if draw(st.integers(0, 3)) == 0:
        return name
    arguments = draw(st.lists(value(), max_size=1)) + draw(st.lists(keyword_argument(name), max_size=3))
    if draw(st.integers(0, 7)) == 0:
        arguments = draw(st.permutations(arguments))
    separator = draw(WHITESPACE) + "," + draw(WHITESPACE)
    return f"{name}{draw(WHITESPACE)}({draw(WHITESPACE)}{separator.join(arguments)}{draw(WHITESPACE)})"


@st.composite
def grammar_shaped(draw) -> str:
    """A strategy string built from the grammar's pieces, then maybe damaged by a stray character."""
    steps = draw(st.lists(step(), min_size=1, max_size=3))
    text = (draw(WHITESPACE) + "+" + draw(WHITESPACE)).join(steps)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(PUNCTUATION) + text[at:]
    return draw(WHITESPACE) + text + draw(WHITESPACE)


@FUZZ
@given(st.text(max_size=300))
def test_random_text_parses_or_raises_one_line_strategy_error(text):
    check(text)


@FUZZ
@given(st.text(alphabet="prune(0.5)+[]:,='\" \n\tqatx", max_size=200))
def test_text_of_grammar_characters_parses_or_raises_one_line_strategy_error(text):
    check(text)


@FUZZ
@given(grammar_shaped())
def test_grammar_shaped_strings_parse_and_print_back_or_raise_one_line_strategy_error(text):
    check(text)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([" ", "\n", "[", "(", "'", "9", "a", "+", ",", "é\n"]), st.integers(1_000, 200_000))
def test_long_runs_of_one_character_are_refused_or_parsed_quickly(char, repeat):
    check(char * repeat)
    check(char * repeat + "prune(0.5)")
    check("prune(0.5)" + char * repeat)
