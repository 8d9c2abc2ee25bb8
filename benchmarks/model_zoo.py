"""The model zoo: `prune(0.5) + qat` to int8 on tiny instances of the models users have.

    PYTHONPATH=. .venv/bin/python benchmarks/model_zoo.py            # every model
    PYTHONPATH=. .venv/bin/python benchmarks/model_zoo.py text_conv1d lstm  # some of them
    PYTHONPATH=. .venv/bin/python benchmarks/model_zoo.py --matrix   # model x strategy: ok / refused

Each model is built untrained (keras.applications with weights=None), fed random data
made here (64 training and 32 validation samples, 1 epoch, batch 8) and run through `kstruct.optimize`. One row
per model and stage (original, prune, qat): the int8 file's size, the task-aware
parity (the report's metric for Keras and the int8 file, agreement, max |Keras - int8|),
one-image latency on LiteRT and the seconds the stage took; then the refusals, with
kstruct's error. `tests/test_model_zoo.py` runs the same builders.

`--matrix` runs every model through each of MATRIX_STRATEGIES instead (same data, 1 epoch,
int8) and prints one Markdown row per model: `ok`, `refused: <kstruct's one line>`, or
`crash: <exception>` for an error that is not kstruct's (a bug to fix, not a refusal).
`--strategy S` (repeatable) picks the columns; crashes' tracebacks go to stderr.
`--samples N` trains on N rows instead of 64 and `--eager` compiles with run_eagerly=True
(the deep models' runs are mostly tracing and conversion: eager steps skip the tracing).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import traceback
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

SAMPLES = 64  # training rows; VALIDATION more rows measure every stage
VALIDATION = 32
STRATEGY = "prune(0.5) + qat"
TARGET = "int8"


@keras.saving.register_keras_serializable(package="kstruct_zoo")
class Scale(keras.layers.Layer):
    """A registered custom layer with a weight: one learned scale per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale


def _classifier(inputs, x, classes: int = 4) -> keras.Model:
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="out")(x))


def _application(build, size: int = 32):
    def make():
        return build(input_shape=(size, size, 3), weights=None, classes=4)

    return make


def _tokens(recurrent=None, conv: bool = False):
    def make():
        inputs = keras.Input((16,), dtype="int32", name="tokens")
        x = keras.layers.Embedding(50, 8, name="embed")(inputs)
        if conv:
            x = keras.layers.Conv1D(16, 3, activation="relu", name="conv")(x)
            x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
        else:
            x = recurrent(16, name="rnn")(x)
        return _classifier(inputs, x)

    return make


def attention() -> keras.Model:
    inputs = keras.Input((8, 16), name="sequence")
    attended = keras.layers.MultiHeadAttention(2, 8, name="mha")(inputs, inputs)
    x = keras.layers.LayerNormalization(name="norm")(keras.layers.Add(name="residual")([inputs, attended]))
    x = keras.layers.Dense(16, activation="relu", name="ffn")(x)
    return _classifier(inputs, keras.layers.GlobalAveragePooling1D(name="pool")(x))


def multi_input() -> keras.Model:
    image = keras.Input((16, 16, 3), name="image")
    vector = keras.Input((5,), name="vector")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    y = keras.layers.Dense(8, activation="relu", name="vec_dense")(vector)
    return _classifier([image, vector], keras.layers.Concatenate(name="concat")([x, y]))


def _dense_body(inputs):
    x = keras.layers.Dense(32, activation="relu", name="hidden_a")(inputs)
    return keras.layers.Dense(16, activation="relu", name="hidden_b")(x)


def regression() -> keras.Model:
    inputs = keras.Input((10,), name="features")
    return keras.Model(inputs, keras.layers.Dense(1, name="value")(_dense_body(inputs)))


def binary() -> keras.Model:
    inputs = keras.Input((10,), name="features")
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="prob")(_dense_body(inputs)))


def custom_layer() -> keras.Model:
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = Scale(name="scale")(x)
    return _classifier(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x))


def raw_ops() -> keras.Model:
    """`x + y`, `x * 3.0` and `keras.ops.add` on symbolic tensors: operations, not layers."""
    inputs = keras.Input((16, 16, 3), name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    b = keras.layers.Conv2D(8, 1, name="conv_b")(inputs)
    x = (a + b) * 3.0
    x = keras.ops.add(x, keras.layers.Conv2D(8, 1, name="conv_c")(inputs))
    return _classifier(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.ReLU(name="relu")(x)))


def segmentation() -> keras.Model:
    """A conv autoencoder with a per-pixel softmax over 3 classes (labels (n, 16, 16))."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="down")(inputs)
    x = keras.layers.SeparableConv2D(16, 3, padding="same", activation="relu", name="sep")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu", name="up_conv")(x)
    x = keras.layers.UpSampling2D(name="upsample")(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax", name="pixels")(x))


def unet() -> keras.Model:
    """A two-level U-Net: encoder features concatenated into the decoder, a per-pixel softmax over 3 classes."""
    inputs = keras.Input((16, 16, 3), name="image")
    enc1 = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="enc1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(enc1)
    x = keras.layers.Conv2D(16, 3, padding="same", name="enc2")(x)
    enc2 = keras.layers.ReLU(name="enc2_relu")(keras.layers.BatchNormalization(name="enc2_bn")(x))
    x = keras.layers.MaxPooling2D(name="pool2")(enc2)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="bottleneck")(x)
    x = keras.layers.Conv2DTranspose(16, 2, strides=2, name="up2")(x)
    x = keras.layers.Concatenate(name="skip2")([x, enc2])
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="dec2")(x)
    x = keras.layers.Conv2DTranspose(8, 2, strides=2, name="up1")(x)
    x = keras.layers.Concatenate(name="skip1")([x, enc1])
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="dec1")(x)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax", name="pixels")(x), name="unet")


def nested_transfer() -> keras.Model:
    """The transfer-learning pattern: a keras.applications backbone as one layer of a Sequential model.

    The issue's pattern ends in `Dense(10)` logits; here a 4-class softmax, so every zoo classifier
    is judged alike (logit outputs are covered by the task tests).
    """
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3), name="image"),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(4, activation="softmax", name="out"),
        ],
        name="transfer",
    )


def mixed_cnn() -> keras.Model:
    """A CNN trained in mixed precision, as on a GPU: float16 compute, float32 variables.

    The policy is set per layer, not globally, so building the zoo leaves the process's
    global policy alone; the softmax runs in float32, as Keras's mixed-precision guide advises.
    """
    mixed = "mixed_float16"
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", dtype=mixed, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(dtype=mixed, name="bn")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", dtype=mixed, name="conv_b")(x)
    x = keras.layers.MaxPooling2D(dtype=mixed, name="max_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype=mixed, name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", dtype=mixed, name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", dtype="float32", name="out")(x))


def tagger() -> keras.Model:
    """A sequence tagger: one of 5 tags per token from a bidirectional LSTM."""
    inputs = keras.Input((16,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(50, 8, name="embed")(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True), name="bilstm")(x)
    tags = keras.layers.TimeDistributed(keras.layers.Dense(5, activation="softmax"), name="tags")
    return keras.Model(inputs, tags(x))


def siamese() -> keras.Model:
    """Two images through one shared conv tower; a sigmoid on |a - b| says whether they match."""
    tower = [
        keras.layers.Conv2D(8, 3, activation="relu", name="tower_conv_a"),
        keras.layers.Conv2D(16, 3, activation="relu", name="tower_conv_b"),
        keras.layers.GlobalAveragePooling2D(name="tower_pool"),
        keras.layers.Dense(8, name="tower_embed"),
    ]

    def embed(x):
        for layer in tower:
            x = layer(x)
        return x

    left, right = keras.Input((16, 16, 3), name="left"), keras.Input((16, 16, 3), name="right")
    distance = keras.ops.abs(embed(left) - embed(right))
    return keras.Model([left, right], keras.layers.Dense(1, activation="sigmoid", name="same")(distance))


# name -> (builder, loss). The loss decides the task kstruct measures.
ZOO = {
    "mobilenet_v3_small": (_application(keras.applications.MobileNetV3Small), "sparse_categorical_crossentropy"),
    "efficientnet_b0": (_application(keras.applications.EfficientNetB0), "sparse_categorical_crossentropy"),
    "densenet121": (_application(keras.applications.DenseNet121), "sparse_categorical_crossentropy"),
    "convnext_tiny": (_application(keras.applications.ConvNeXtTiny), "sparse_categorical_crossentropy"),
    "nasnet_mobile": (_application(keras.applications.NASNetMobile), "sparse_categorical_crossentropy"),
    "resnet50_v2": (_application(keras.applications.ResNet50V2), "sparse_categorical_crossentropy"),
    "nested_transfer": (nested_transfer, "sparse_categorical_crossentropy"),
    "text_conv1d": (_tokens(conv=True), "sparse_categorical_crossentropy"),
    "lstm": (_tokens(keras.layers.LSTM), "sparse_categorical_crossentropy"),
    "gru": (_tokens(keras.layers.GRU), "sparse_categorical_crossentropy"),
    "attention": (attention, "sparse_categorical_crossentropy"),
    "multi_input": (multi_input, "sparse_categorical_crossentropy"),
    "regression": (regression, "mse"),
    "binary": (binary, "binary_crossentropy"),
    "custom_layer": (custom_layer, "sparse_categorical_crossentropy"),
    "raw_ops": (raw_ops, "sparse_categorical_crossentropy"),
    "segmentation": (segmentation, "sparse_categorical_crossentropy"),
    "unet": (unet, "sparse_categorical_crossentropy"),
    "mixed_cnn": (mixed_cnn, "sparse_categorical_crossentropy"),
    "tagger": (tagger, "sparse_categorical_crossentropy"),
    "siamese": (siamese, "binary_crossentropy"),
}
# The strategies of `--matrix` (issue 20's survey), each to TARGET.
MATRIX_STRATEGIES = ("prune(0.5) + qat", "prune_channels(0.5)", "cluster(16) + qat", "ptq", "drop_blocks(1)")


def _input_array(tensor, rng: np.random.Generator, rows: int) -> np.ndarray:
    shape = (rows, *tensor.shape[1:])
    if "int" in str(tensor.dtype):
        return rng.integers(0, 50, shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


def _labels(model: keras.Model, loss: str, rng: np.random.Generator, rows: int) -> np.ndarray:
    if loss == "mse":
        return rng.normal(size=(rows, 1)).astype("float32")
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, (rows, 1)).astype("float32")
    shape = model.outputs[0].shape
    return rng.integers(0, shape[-1], (rows, *shape[1:-1])).astype("int32")


def _data(model: keras.Model, loss: str, rng: np.random.Generator, rows: int) -> tuple:
    arrays = [_input_array(tensor, rng, rows) for tensor in model.inputs]
    return arrays if len(arrays) > 1 else arrays[0], _labels(model, loss, rng, rows)


def build(name: str, *, samples: int = SAMPLES, eager: bool = False) -> tuple[keras.Model, tuple, tuple]:
    """The compiled model `name`, its random training and validation `(x, y)` (seeded: the same every run).

    `eager=True` compiles with `run_eagerly=True`: for a few batches of a deep model, eager steps
    cost less than tracing its train step.
    """
    builder, loss = ZOO[name]
    keras.utils.set_random_seed(0)
    model = builder()
    model.compile(optimizer="adam", loss=loss, run_eagerly=eager)
    rng = np.random.default_rng(0)
    return model, _data(model, loss, rng, samples), _data(model, loss, rng, VALIDATION)


def run(name: str):
    """`kstruct.optimize(model, STRATEGY, target=TARGET, epochs=1)` on zoo model `name`."""
    return optimize(*build(name))


def optimize(model: keras.Model, train: tuple, validation: tuple, *, strategy: str = STRATEGY):
    """The zoo's one call: `strategy` to TARGET, 1 epoch, batch 8, warnings silenced."""
    import kstruct

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kstruct.optimize(
            model, strategy, train_data=train, validation_data=validation, epochs=1, batch_size=8, target=TARGET, verbose=0
        )


def _row(name: str, stage) -> str:
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    return (
        f"| {name} | {stage.stage} | {stage.tflite_bytes:,} | {stage.metric} | {fmt(stage.keras_metric, '.4f')} | "
        f"{fmt(stage.tflite_metric, '.4f')} | {fmt(stage.agreement, '.2%')} | {fmt(stage.max_abs_diff, '.2g')} | "
        f"{stage.latency_ms:.3f} | {stage.seconds:.1f} |"
    )


def main(names: list[str]) -> None:
    from kstruct.errors import KstructError
    from tflite_export import ExportError

    print("| model | stage | int8 B | metric | keras | int8 | agree | max diff | ms/img | time s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    refused = []
    for name in names:
        started = time.perf_counter()
        try:
            result = run(name)
        except (KstructError, ExportError) as error:
            refused.append((name, f"{type(error).__name__}: {error}"))
            continue
        for stage in result.report.stages:
            print(_row(name, stage), flush=True)
        print(f"<!-- {name}: {time.perf_counter() - started:.1f} s in all -->", file=sys.stderr, flush=True)
    for name, why in refused:
        print(f"refused: {name}: {why}")


def _one_line(error: BaseException) -> str:
    """An error as one Markdown table cell: its first line, pipes escaped.

    Keras wraps an error raised inside a layer's call as "Exception encountered when calling
    X.call()." with the cause on a later line: the cell keeps both.
    """
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    wrapped = bool(lines) and lines[0].startswith("Exception encountered when calling")
    text = " ".join(lines[: 2 if wrapped else 1])
    return f"{type(error).__name__}: {text}".replace("|", "\\|")


def _where(error: BaseException) -> str:
    """` (at path:line)`: the innermost frame of kstruct or tflite_export that the error passed through."""
    ours = re.compile(r"/(kstruct|tflite_export)/")
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if ours.search(frame.filename)]
    if not frames:
        return ""
    path = re.sub(r".*/(?=(kstruct|tflite_export)/)", "", frames[-1].filename)
    return f" (at {path}:{frames[-1].lineno})"


def cell(name: str, strategy: str, *, samples: int = SAMPLES, eager: bool = False) -> str:
    """`ok`, `refused: <kstruct's one line>` or `crash: <exception>` for zoo model `name` under `strategy`."""
    from kstruct.errors import KstructError
    from tflite_export import ExportError

    try:
        model, train, validation = build(name, samples=samples, eager=eager)
        optimize(model, train, validation, strategy=strategy)
    except (KstructError, ExportError) as error:
        return f"refused: {_one_line(error)}"
    except Exception as error:  # noqa: BLE001 - the matrix records a crash and goes on to the next cell
        logging.getLogger("model_zoo").warning("%s under %s crashed", name, strategy, exc_info=True)
        return f"crash: {_one_line(error)}{_where(error)}"
    finally:
        keras.backend.clear_session()
    return "ok"


def matrix(
    names: list[str], strategies: tuple[str, ...] = MATRIX_STRATEGIES, *, samples: int = SAMPLES, eager: bool = False
) -> None:
    """`--matrix`: one Markdown row per model, one column per strategy; each cell's time goes to stderr."""
    print("| model | " + " | ".join(f"`{s}`" for s in strategies) + " |")
    print("|---" * (len(strategies) + 1) + "|", flush=True)
    for name in names:
        cells = []
        for strategy in strategies:
            started = time.perf_counter()
            cells.append(cell(name, strategy, samples=samples, eager=eager))
            seconds = time.perf_counter() - started
            print(f"<!-- {name} / {strategy}: {seconds:.1f} s: {cells[-1]} -->", file=sys.stderr, flush=True)
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def profile(name: str) -> None:
    """`--profile NAME`: cProfile of one model's run, cumulative time, kstruct's and tflite_export's calls first."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = run(name)
    profiler.disable()
    for stage in result.report.stages:
        print(_row(name, stage))
    print(f"total {time.perf_counter() - started:.1f} s under cProfile")
    stats = pstats.Stats(profiler).sort_stats("cumulative")
    stats.print_stats("kstruct|tflite_export", 60)
    stats.print_stats(40)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"zoo models (default: all): {', '.join(ZOO)}")
    parser.add_argument("--matrix", action="store_true", help="model x strategy: ok / refused, with the reason")
    parser.add_argument("--strategy", action="append", help="a matrix column (repeatable; default: MATRIX_STRATEGIES)")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="training rows (validation stays 32)")
    parser.add_argument("--eager", action="store_true", help="compile with run_eagerly=True (less tracing)")
    parser.add_argument("--profile", metavar="NAME", help="cProfile of one model's run")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ZOO]
    if unknown:
        parser.error(f"unknown zoo model(s) {unknown}; the zoo has {list(ZOO)}")
    return args


if __name__ == "__main__":
    args = _arguments(sys.argv[1:])
    if args.profile:
        profile(args.profile)
    elif args.matrix:
        strategies = tuple(args.strategy or MATRIX_STRATEGIES)
        matrix(args.names or list(ZOO), strategies, samples=args.samples, eager=args.eager)
    else:
        main(args.names or list(ZOO))
