"""The model zoo: `optimize(model, "prune(0.5) + qat", target="int8")` on the models users have.

Tiny untrained instances (benchmarks/model_zoo.py builds them and their random data),
one epoch. Each must come through with the figures its task is judged by, and an int8
file that reproduces the QAT model; the user's model is left as it was.
"""

import re

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from tflite_export import ExportError

from benchmarks.model_zoo import SAMPLES, build, optimize

CLASSIFICATION = ("classification", "accuracy")
# name -> (task, metric name the report must give)
EXPECTED = {
    "text_conv1d": CLASSIFICATION,
    "lstm": CLASSIFICATION,
    "gru": CLASSIFICATION,
    "attention": CLASSIFICATION,
    "multi_input": CLASSIFICATION,
    "regression": ("regression", "mean_squared_error"),
    "binary": ("binary", "thresholded accuracy"),
    "custom_layer": CLASSIFICATION,
    "raw_ops": CLASSIFICATION,
    "segmentation": CLASSIFICATION,
    "unet": CLASSIFICATION,  # per-pixel accuracy over (16, 16) labels
    "mixed_cnn": CLASSIFICATION,
    "tagger": CLASSIFICATION,  # per-token accuracy over (16,) labels
    "siamese": ("binary", "thresholded accuracy"),
    "mobilenet_v3_small": CLASSIFICATION,
    "efficientnet_b0": CLASSIFICATION,
    "densenet121": CLASSIFICATION,
    "convnext_tiny": CLASSIFICATION,
    "nasnet_mobile": CLASSIFICATION,
    "resnet50_v2": CLASSIFICATION,
    "nested_transfer": CLASSIFICATION,
}
# Layers QAT leaves in float (the qat stage's notes name them): Embedding and the recurrent layers
# (the converter's calibration quantizes them), MultiHeadAttention and LayerNormalization, an unquantizable custom layer,
# EfficientNet's Normalization. Every other small model is quantized throughout.
FLOAT_LAYERS = {
    "text_conv1d": {"embed"},
    "lstm": {"embed", "rnn"},
    "gru": {"embed", "rnn"},
    "attention": {"mha", "norm"},
    "custom_layer": {"scale"},
    "efficientnet_b0": {"normalization"},
    # Its BatchNormalization follows a ReLU, so there is no Conv to fold it into (a pattern users write).
    "mixed_cnn": {"bn"},
    "tagger": {"embed", "bilstm", "tags"},
}
# The keras.applications models are marked slow: 2 to 8 minutes each on 2 shared cores, mostly
# TensorFlow tracing the train step of a 150- to 430-layer graph (see the README's "Model zoo").
# The nested transfer model is one of them: a MobileNetV2 backbone inside a Sequential model.
APPLICATIONS = {
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
    "nasnet_mobile",
    "resnet50_v2",
    "nested_transfer",
}
# All but the smallest are also `heavy`: `make test` (8 minutes on 2 cores) leaves them to `make test-heavy`.
# So is the tagger (11 s of CPU: two traced fits and three conversions of a two-way LSTM); make test
# prunes taggers to int8 in tests/pruning/test_recurrent.py.
HEAVY = (APPLICATIONS - {"mobilenet_v3_small"}) | {"tagger"}
# ConvNeXtTiny trains under QAT (its constant Normalization is built outside the symbolic call), but the int8
# conversion stops on the converter's "same scale" rule for a Squeeze between two quantizers whose ranges differ
# by 0.5% (README "Model zoo"). Strict: the mark goes when the fix lands.
CONVNEXT_SAME_SCALE = pytest.mark.xfail(raises=ExportError, strict=True, reason="int8: Squeeze same-scale rule")
# NASNetMobile's int8 file is 0.18 (46 int8 steps) off its QAT model at 100% agreement and a mean top-1
# margin of 0.63: a parity gap to explain (as EfficientNetB0's 0.047), not a tolerance to widen. Strict.
NASNET_INT8_GAP = pytest.mark.xfail(raises=AssertionError, strict=True, reason="int8 file 0.18 off its QAT model")
MARKS = (
    (pytest.mark.slow, APPLICATIONS),
    (pytest.mark.heavy, HEAVY),
    (CONVNEXT_SAME_SCALE, {"convnext_tiny"}),
    (NASNET_INT8_GAP, {"nasnet_mobile"}),
)
# Models whose untrained outputs are nearly uniform, so one int8 step flips an argmax: the deep
# applications, and the tagger (an untrained BiLSTM's 5 tag scores are all near 0.2; 60% per-token
# agreement at a max difference of one int8 step, 0.004). Their parity is judged by the difference alone.
NEAR_UNIFORM = APPLICATIONS | {"tagger"}
# EfficientNetB0's int8 file is up to 0.047 (12 int8 steps of a softmax) off its QAT model: a known
# gap, not yet explained (README "Not supported yet"); a broken file is off by the scores' size.
MAX_DIFF = {"efficientnet_b0": 0.08}


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _io_dtypes(blob: bytes) -> tuple[list[str], list[str]]:
    interpreter = Interpreter(model_content=blob)
    names = lambda details: [d["dtype"].__name__ for d in details]  # noqa: E731
    return names(interpreter.get_input_details()), names(interpreter.get_output_details())


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[mark for mark, group in MARKS if n in group])
        for n in EXPECTED
    ],
)
def test_prune_then_qat_to_int8_keeps_the_task_figures_and_the_int8_file_matches(name):
    # The applications train on two batches, eagerly: eager steps cost less than tracing a 150-layer graph.
    model, train, validation = build(name, samples=16 if name in APPLICATIONS else SAMPLES, eager=name in APPLICATIONS)
    before = _weights(model)
    result = optimize(model, train, validation)

    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model), strict=True))  # never mutated
    # The mixed CNN's policy is per layer: exporting it (through a float32 twin) leaves the global one alone.
    assert keras.config.dtype_policy().name == "float32"
    task, metric = EXPECTED[name]
    stages = result.report.stages
    assert [s.stage for s in stages] == ["original", "prune(0.5)", "qat"]
    for stage in stages:
        assert (stage.task, stage.metric) == (task, metric)
        assert stage.keras_metric is not None and stage.tflite_metric is not None
    pruned, qat = stages[1], stages[2]
    assert 0.45 <= pruned.sparsity <= 0.55
    assert qat.sparsity >= 0.45  # qat keeps the pruned zeros

    # The int8 file reproduces the QAT model: a broken file (wrong scales, a float op
    # fed int8 bytes) is off by far more than one or two int8 steps of a [0, 1] output.
    if task == "regression":
        assert qat.max_abs_diff <= 0.05
        assert qat.tflite_metric == pytest.approx(qat.keras_metric, rel=0.05)
    elif name in NEAR_UNIFORM:
        # Untrained deep models put out nearly uniform class scores (the report's mean top-1
        # margin): a difference of one int8 step flips the argmax, so agreement says little.
        assert qat.mean_top1_margin is not None
        assert qat.max_abs_diff <= MAX_DIFF.get(name, 0.02)
    else:
        # Within 0.02 (5 int8 steps of a [0, 1] score) only near ties can flip, and these
        # untrained models have many: one flip in 32 rows costs 3% agreement.
        assert qat.max_abs_diff <= 0.02
        assert qat.agreement >= 0.9

    float_layers = set(qat.notes["float_layers"])
    expected_float = FLOAT_LAYERS.get(name, set())
    assert expected_float <= float_layers if name in APPLICATIONS else float_layers == expected_float, float_layers

    inputs, outputs = _io_dtypes(result.tflite)
    assert outputs == ["int8"] * len(outputs)
    expected_inputs = ["int32" if "int" in str(t.dtype) else "int8" for t in result.model.inputs]
    assert sorted(inputs) == sorted(expected_inputs)


@pytest.mark.parametrize("given", ["adapted", "constant"])
def test_normalization_runs_in_float_with_its_statistics_in_qat_and_int8(given):
    """EfficientNet's first layer (adapted) and ConvNeXt's (mean and variance given): built inside Keras's
    symbolic call, the mean was a dead graph tensor (ConvNeXt's QAT training failed: "out of scope")."""
    import tflite_export

    from kstruct.quantization import FloatPassthrough, quantize

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(32, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    if given == "adapted":
        norm = keras.layers.Normalization(axis=-1)
        norm.adapt(x)
    else:
        norm = keras.layers.Normalization(axis=-1, mean=[2.0, 1.5, 2.5], variance=[9.0, 8.0, 10.0])
    hidden = keras.layers.Conv2D(4, 3)(norm(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(hidden)))

    qat = quantize(model)
    floats = [layer for layer in qat.layers if isinstance(layer, FloatPassthrough)]
    assert [type(layer.layer).__name__ for layer in floats] == ["Normalization"]
    assert floats[0].layer is not norm
    # Its adapted mean and variance came along (not the initial 0 and 1).
    np.testing.assert_allclose(floats[0].layer(x), norm(x), rtol=1e-5, atol=1e-5)

    for batch in np.array_split(x, 4):
        qat(batch, training=True)
    qat.compile("adam", "mse")  # a traced train step reads the mean too (where the constant one failed)
    qat.fit(x, np.zeros((32, 3), "float32"), epochs=1, batch_size=16, verbose=0)
    expected = qat.predict(x, verbose=0)
    blob = tflite_export.convert(qat, "int8", representative_data=x)
    assert np.abs(np.asarray(tflite_export.predict(blob, x)) - expected).max() <= 0.1 * np.abs(expected).max()


def test_the_matrix_prints_ok_or_kstructs_one_line_refusal_per_strategy(capsys):
    """`benchmarks/model_zoo.py --matrix`: the README's model x strategy table comes from these rows."""
    from benchmarks.model_zoo import matrix

    matrix(["regression"], ("ptq", "drop_blocks(1)"))
    header, rule, row = capsys.readouterr().out.splitlines()
    assert header == "| model | `ptq` | `drop_blocks(1)` |"
    assert rule == "|---|---|---|"
    # A plain Dense stack has no residual block: drop_blocks refuses with kstruct's error, not a crash.
    assert re.fullmatch(
        r"\| regression \| ok \| refused: PruningError: drop_blocks\(1\): model `functional(_\d+)?` has 0 removable "
        r"block\(s\) \(none\); ask for at most 0\. \|",
        row,
    ), row
