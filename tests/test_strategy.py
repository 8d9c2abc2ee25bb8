import pytest

import kstruct
from kstruct import Prune, Strategy, StrategyError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("prune(0.75)", "prune(0.75)"),
        ("  prune( sparsity = 0.8 , schedule='constant' ) ", "prune(0.8, schedule='constant')"),
        ("prune(2:4)", "prune(2:4)"),
        ('prune(0.5, epochs=3, layers="dense.*")', "prune(0.5, epochs=3, layers='dense.*')"),
        ("prune(0.5) + prune(2:4)", "prune(0.5) + prune(2:4)"),
    ],
)
def test_strategy_strings_parse_into_step_objects_and_print_back(text, expected):
    strategy = Strategy.parse(text)
    assert str(strategy) == expected
    assert all(isinstance(step, Prune) for step in strategy)
    assert str(Strategy.parse(str(strategy))) == expected


def test_parsed_arguments_reach_the_step():
    step, = Strategy.parse("prune(sparsity=0.8, schedule='constant')")
    assert (step.sparsity, step.schedule, step.m_by_n) == (0.8, "constant", None)
    step, = Strategy.parse("prune(2:4)")
    assert (step.sparsity, step.m_by_n) == (None, (2, 4))


def test_python_objects_compose_like_strings():
    assert str(Strategy([Prune(0.5)]) + Prune(m_by_n=(2, 4))) == "prune(0.5) + prune(2:4)"


@pytest.mark.parametrize(
    "text, message",
    [
        ("prun(0.75)", "Invalid strategy: unknown step 'prun' (at character 1: >>>prun<<<(0.75))"),
        ("prune(0.75) + quant", "unknown step 'quant' (at character 15: prune(0.75) + >>>quant<<<)"),
        ("prune(1.5)", "Expected `sparsity` in [0, 1). Received: sparsity=1.5 (at character 1: >>>prune(1.5)<<<)"),
        ("prune(-0.1)", "Expected `sparsity` in [0, 1). Received: sparsity=-0.1"),
        ("prune(0.5) +", "expected a step name, found the end (at the end: prune(0.5) +>>><<<)"),
        ("prune(0.5", "expected ',' or ')', found the end"),
        ("prune(0.5) prune(0.2)", "expected '+' between steps, found 'prune' (at character 12"),
        ("prune(0.5; 2)", "found ';'"),
        ("prune(3:2)", "Expected an N:M pattern with 0 < N < M, e.g. 2:4. Received: 3:2"),
        ("prune(0.5, colour=1)", "unexpected keyword argument 'colour'"),
        ("", "it is empty"),
    ],
)
def test_bad_strategies_point_at_the_token_and_list_known_steps(text, message):
    with pytest.raises(StrategyError) as err:
        Strategy.parse(text)
    text_of_error = str(err.value)
    assert message in text_of_error
    assert text_of_error.endswith(f"Known steps: {', '.join(sorted(kstruct.KNOWN_STEPS))}.")
    assert "\n" not in text_of_error


def test_strategy_rejects_non_steps():
    with pytest.raises(StrategyError, match="Expected kstruct steps in a Strategy. Received: an object of type str"):
        Strategy(["prune"])
