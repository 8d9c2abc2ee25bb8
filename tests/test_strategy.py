import re
import subprocess
import sys
import time

import numpy as np
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


@pytest.mark.parametrize(
    "text",
    [
        "prune(0.75)",
        "prune(1e-05, schedule='constant', epochs=3)",
        "prune(2:4) + qat",
        "prune(0.5, layers=['conv', \"dense.*\"])",
        "prune(0.5, layers=[])",
        "prune(0.5, layers='dense')",
        "qat(epochs=2, preserve_sparsity=False, target='int8')",
        "qat(target=None)",
        "ptq(samples=16, target='edgetpu')",
        "search(trials=3, latency_ms=0.5, tflite_bytes=20000, tuner='bayesian', directory='/tmp/s', plot=False)",
    ],
)
def test_str_of_a_strategy_parses_back_to_an_equal_strategy(text):
    strategy = Strategy.parse(text)
    again = Strategy.parse(str(strategy))
    assert again == strategy
    assert [step.get_config() for step in again] == [step.get_config() for step in strategy]
    assert str(again) == str(strategy)


def test_lists_print_as_list_literals_not_as_python_reprs():
    step = Prune(0.5, layers=["a", "b"])
    assert str(step) == "prune(0.5, layers=['a', 'b'])"
    assert Strategy.parse(str(step)).steps[0].layers == ["a", "b"]


def test_from_config_of_get_config_rebuilds_an_equal_step():
    for step in (Prune(m_by_n=(2, 4), epochs=2), kstruct.QAT(preserve_sparsity=False), kstruct.PTQ(samples=8)):
        config = step.get_config()
        rebuilt = type(step).from_config(config)
        assert rebuilt == step and rebuilt.get_config() == config
    assert Prune(m_by_n=(2, 4)).get_config()["sparsity"] == (2, 4)
    assert Prune(0.5) != Prune(0.6) and Prune(0.5) != kstruct.QAT()


def test_bad_list_literals_point_at_the_token():
    with pytest.raises(StrategyError, match=r"expected ',' or '\]' in a list, found the end"):
        Strategy.parse("prune(0.5, layers=['a'")
    with pytest.raises(StrategyError, match=r"expected a value, found '\)'"):
        Strategy.parse("prune(0.5, layers=[)")


class _Freeze(kstruct.Step):
    """A user's step: marks nothing, trains nothing, hands the model on."""

    def __init__(self, label: str = "all", *, keep: list | None = None):
        self.label = label
        self.keep = keep

    def apply(self, model, context):
        return kstruct.StepResult(model=model, notes={"label": self.label})


def test_register_step_adds_a_users_step_to_the_grammar():
    class Freeze(_Freeze):
        name = "freeze_for_test"

    kstruct.register_step("freeze_for_test", Freeze)
    try:
        strategy = Strategy.parse("prune(0.5) + freeze_for_test(keep=['x', 'y'])")
        step = strategy.steps[1]
        assert isinstance(step, Freeze) and Freeze.name == "freeze_for_test" and step.keep == ["x", "y"] and step.label == "all"
        assert str(strategy) == "prune(0.5) + freeze_for_test(keep=['x', 'y'])"
        assert Strategy.parse(str(strategy)) == strategy
        assert "freeze_for_test" in kstruct.KNOWN_STEPS
        with pytest.raises(StrategyError, match="A step named 'freeze_for_test' is already registered; pass override=True"):
            kstruct.register_step("freeze_for_test", type("Other", (_Freeze,), {"name": "freeze_for_test"}))
    finally:
        from kstruct.engine import registry

        registry._REGISTRY.pop("freeze_for_test")


@pytest.mark.parametrize(
    "name, cls, message",
    [
        ("true", _Freeze, "Expected a step name that is a Python identifier other than true/false/none"),
        ("my-step", _Freeze, "Received: name='my-step'"),
        ("thing", dict, "Expected a subclass of kstruct.Step. Received: cls=<class 'dict'>"),
        ("pruning", Prune, "Step class Prune has name='prune', but is registered as 'pruning'"),
        ("freeze", _Freeze, "Step class _Freeze has no `name`; set name = 'freeze' on the class before registering it"),
    ],
)
def test_register_step_refuses_bad_names_and_classes(name, cls, message):
    with pytest.raises(StrategyError, match=re.escape(message)):
        kstruct.register_step(name, cls)


def test_parsing_a_strategy_without_search_does_not_load_keras_tuner():
    code = (
        "import sys, kstruct; kstruct.Strategy.parse('prune(0.5) + qat').validate('int8'); "
        "print('keras_tuner' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr


def test_quantizing_steps_declare_exactly_the_integer_targets_they_serve():
    import tflite_export

    integer = tuple(name for name, row in tflite_export.TARGET_TABLE.items() if row.quantize == "int8")
    four_bit = tuple(name for name, row in tflite_export.TARGET_TABLE.items() if row.quantize == "int4")
    assert kstruct.QAT.targets == integer  # QAT simulates int8 only
    assert kstruct.QAT(bits=4).targets == four_bit  # its file is ai-edge-quantizer's, with 4-bit kernels
    # The converter calibrates int16 activations too; ai-edge-quantizer makes the int4 file from the float one.
    assert kstruct.PTQ.targets == (*integer, "int16x8", *four_bit)


@pytest.mark.parametrize(
    "text, target, message",
    [
        ("qat + prune(0.5)", "int8",
         "Invalid strategy 'qat + prune(0.5)': prune(0.5) trains the model after qat has quantized it; "
         "put prune(0.5) before qat."),
        ("qat + qat", "int8",
         "Invalid strategy 'qat + qat': qat trains the model after qat has quantized it; "
         "quantize once, as the last step: 'qat'."),
        ("ptq + prune(2:4)", "int8",
         "Invalid strategy 'ptq + prune(2:4)': prune(2:4) trains the model after ptq has quantized it; "
         "put prune(2:4) before ptq."),
        ("ptq + qat", "int8",
         "Invalid strategy 'ptq + qat': qat trains the model after ptq has quantized it; put qat before ptq."),
        ("prune(0.5) + qat", "int16x8",
         "Invalid strategy 'prune(0.5) + qat' for target 'int16x8': qat serves only the targets int8, edgetpu, "
         "micro. Pass one of them as target (CLI: --target), or drop qat."),
        ("qat", "float32",
         "Invalid strategy 'qat' for target 'float32': qat serves only the targets int8, edgetpu, micro. "
         "Pass one of them as target (CLI: --target), or drop qat."),
        ("ptq", "gpu",
         "Invalid strategy 'ptq' for target 'gpu': ptq serves only the targets int8, edgetpu, micro, int16x8, int4. "
         "Pass one of them as target (CLI: --target), or drop ptq."),
    ],
)
def test_optimize_refuses_impossible_chains_before_any_work(text, target, message, monkeypatch):
    import keras
    import tflite_export

    def no_conversion(*args, **kwargs):
        raise AssertionError("optimize converted a model before validating the chain")

    monkeypatch.setattr(tflite_export, "convert", no_conversion)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
    with pytest.raises(StrategyError) as err:
        kstruct.optimize(model, text, train_data=(x, y), target=target, verbose=0)
    assert str(err.value) == message
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_a_steps_own_target_option_is_validated_too():
    with pytest.raises(StrategyError) as err:
        Strategy.parse("qat(target='int16x8')").validate("int8")
    assert str(err.value) == (
        "Invalid strategy 'qat(target='int16x8')' for target 'int16x8': qat serves only the targets int8, "
        "edgetpu, micro. Pass one of them as target (CLI: --target), or drop qat."
    )
    Strategy.parse("qat(target='edgetpu')").validate("int8")


def test_valid_chains_pass_validation():
    for text in ("prune(0.5) + qat", "prune(2:4) + ptq", "search(trials=2) + prune(0.5) + qat", "prune(0.5)"):
        Strategy.parse(text).validate("int8")
    Strategy.parse("prune(0.5)").validate("float16")


# The parser cannot hang or leak another exception (issue 19, part 4).

MAX_MESSAGE = 400  # characters: the longest hold a step's own message (clipped at 100) and the known steps


def _refusal(text: str) -> str:
    """The StrategyError message for `text`, checked to be one short line."""
    with pytest.raises(StrategyError) as err:
        Strategy.parse(text)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and len(message) <= MAX_MESSAGE, message
    return message


def test_whitespace_costs_linear_time_and_a_megabyte_is_refused_by_the_length_cap():
    started = time.perf_counter()
    assert Strategy.parse(" " * 9_000 + "prune(0.5)" + "\n" * 900) == Strategy([Prune(0.5)])
    assert Strategy.parse("prune(0.5)" + " " * 9_990) == Strategy([Prune(0.5)])  # quadratic before: 10 s
    message = _refusal(" " * 1_000_000 + "prune(0.5)")
    assert time.perf_counter() - started < 0.5
    assert message == (
        "Invalid strategy: it is 1,000,010 characters long, over the limit of 10,000 (it starts 'prune(0.5)')."
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("prune(0.5, epochs=1e309)",
         "Invalid strategy: expected a finite number, found '1e309' (at character 19: prune(0.5, epochs=>>>1e309<<<))"),
        ("cluster(epochs=1e309)", "expected a finite number, found '1e309'"),
        ("qat(epochs=-1e309)", "expected a finite number, found '-1e309'"),
        ("ptq(samples=1e309)", "expected a finite number, found '1e309'"),
        ("distill(epochs=1e999)", "expected a finite number, found '1e999'"),
        ("prune(0.5, epochs=" + "9" * 5000 + ")",
         "Invalid strategy: a number of 5000 characters; numbers have at most 40 (at character 19: "
         "prune(0.5, epochs=>>>" + "9" * 40 + "...<<<))"),
        ("prune(" + "1" * 5000 + ":4)", "a number of 5002 characters; numbers have at most 40"),
        ("prune(0.5, layers=" + "[" * 500 + "]" * 500 + ")",
         "Invalid strategy: lists nest at most 16 deep (at character 35: "
         "...ers=[[[[[[[[[[[[[[[[>>>[<<<[[[[[[[[[[[[[[[[[[[[...)"),
        ("prune(0.5, layers=1, layers=2)", "keyword argument 'layers' is given twice (at character 22"),
        ("distill(temperature=inf)", "Expected `temperature` to be a finite number. Received: temperature='inf'"),
        ("cluster(entropy_weight=nan)", "Expected `entropy_weight` to be a finite number. Received: entropy_weight='nan'"),
    ],
)
def test_inputs_that_leaked_other_exceptions_raise_one_line_strategy_errors(text, message):
    assert message in _refusal(text)


def test_lists_nest_up_to_the_cap():
    nested = "[" * 16 + "'a'" + "]" * 16
    assert str(Strategy.parse(f"prune(0.5, layers={nested})")) == f"prune(0.5, layers={nested})"


def test_errors_show_a_short_escaped_excerpt_on_one_line():
    message = _refusal("prune(0.5,\n  colour=1)")
    assert "(at character 1: >>>prune(0.5,\\n  colour=1)<<<)" in message
    message = _refusal("prune(0.5) +\n" * 700 + "oops\r\n")
    assert "unknown step 'oops' (at character 9101: ...5) +\\nprune(0.5) +\\n>>>oops<<<\\r\\n)" in message
    message = _refusal("prune(0.5) + " + "x" * 9_000)
    assert "unknown step '" + "x" * 20 + "...' (at character 14: prune(0.5) + >>>" + "x" * 40 + "...<<<)" in message
    assert "\\x00" in _refusal("prune(0.5)\x00")


@pytest.mark.parametrize(
    "step",
    ["prune(0.5, {})", "cluster({})", "qat({})", "distill({})", "search({})", "prune_channels(0.5, {})",
     "drop_blocks({})"],
)
@pytest.mark.parametrize(
    "epochs, message",
    [
        ("1.5", "Expected `epochs` to be a positive int. Received: epochs=1.5"),
        ("true", "Expected `epochs` to be a positive int. Received: epochs=True"),
        ("'2'", "Expected `epochs` to be a positive int. Received: epochs='2'"),
        ("0", "Expected `epochs` >= 1. Received: epochs=0"),
        ("2147483648", "Expected `epochs` <= 2147483647. Received: epochs=2147483648"),
        ("1e309", "Invalid strategy: expected a finite number, found '1e309'"),
    ],
)
def test_every_step_checks_epochs_the_same_way(step, epochs, message):
    assert message in _refusal(step.format(f"epochs={epochs}"))


def test_epochs_in_python_follow_the_same_rule():
    with pytest.raises(StrategyError, match=r"Expected `epochs` to be a positive int. Received: epochs=True"):
        Prune(0.5, epochs=True)
    with pytest.raises(StrategyError, match=r"Expected `epochs` to be a positive int. Received: epochs=1.5"):
        kstruct.QAT(epochs=1.5)
    step = Prune(0.5, epochs=np.int64(2))
    assert step.epochs == 2 and type(step.epochs) is int


def test_a_malformed_strategy_is_refused_without_importing_keras():
    code = (
        "import sys, kstruct\n"
        "texts = [' ' * 20000, 'prune(0.5', 'prune(0.5, epochs=1e309)', 'prune(' + '9' * 99 + ')',\n"
        "         'prune(layers=' + '[' * 99 + ')', 'prun(0.5)', 'prune(0.5) + \\n qat(x=1, x=2)', 42]\n"
        "for text in texts:\n"
        "    try:\n"
        "        kstruct.Strategy.parse(text)\n"
        "    except kstruct.StrategyError:\n"
        "        pass\n"
        "print(sorted(name for name in ('keras', 'tensorflow', 'jax', 'torch') if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "[]", done.stderr
