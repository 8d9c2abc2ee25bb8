"""tf_keras (Keras 2) model files through `kstruct.load_model` and the `kstruct` command (issue 20, item 7).

The corpus is written by tf_keras and tfmot themselves, in one subprocess (tf_keras cannot
share a process with Keras 3), with what each model predicted on fixed inputs; every file
must load in Keras 3 and predict the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from kstruct.cli import main
from tests.console import kstruct as kstruct_cli

CORPUS_SCRIPT = r"""
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tf_keras as k
import tensorflow_model_optimization as tfmot

out = sys.argv[1]
L = k.layers
rng = np.random.default_rng(0)
x_img = rng.random((8, 8, 8, 3)).astype("float32")
y_img = np.arange(8) % 3
x_seq = rng.random((8, 6, 5)).astype("float32")
arrays = {"x_img": x_img, "y_img": y_img, "x_seq": x_seq}

def keep(name, model, x, fmt="h5"):
    model.save(os.path.join(out, f"{name}.{fmt}"))
    arrays[name] = model.predict(x, verbose=0)

k.utils.set_random_seed(0)
m = k.Sequential([L.Input((8, 8, 3)), L.Conv2D(8, 3), L.BatchNormalization(), L.ReLU(), L.Flatten(),
                  L.Dense(3, activation="softmax")])
m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(x_img, y_img, epochs=1, verbose=0)
keep("conv_bn_dense", m, x_img)
keep("conv_bn_dense", m, x_img, fmt="keras")
keep("lstm_bidirectional", k.Sequential([L.Input((6, 5)), L.LSTM(8, return_sequences=True),
                                         L.Bidirectional(L.LSTM(4)), L.Dense(2)]), x_seq)
keep("depthwise", k.Sequential([L.Input((8, 8, 3)), L.DepthwiseConv2D(3), L.BatchNormalization(), L.Conv2D(4, 1),
                                L.GlobalAveragePooling2D(), L.Dense(2)]), x_img)
keep("conv_transpose", k.Sequential([L.Input((8, 8, 3)), L.Conv2D(4, 3, strides=2, padding="same"),
                                     L.Conv2DTranspose(3, 3, strides=2, padding="same")]), x_img)

s = tfmot.sparsity.keras
base = k.Sequential([L.Input((8, 8, 3)), L.Conv2D(8, 3, activation="relu"), L.Flatten(), L.Dense(3)])
pruned = s.prune_low_magnitude(base, pruning_schedule=s.ConstantSparsity(0.5, 0, frequency=1))
pruned.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True))
pruned.fit(x_img, y_img, epochs=1, verbose=0, callbacks=[s.UpdatePruningStep()])
keep("tfmot_pruned", pruned, x_img)
stripped = s.strip_pruning(pruned)
keep("tfmot_stripped", stripped, x_img)
arrays["tfmot_stripped_zeros"] = np.array([int(np.sum(w == 0)) for w in stripped.get_weights()])

inp = L.Input((8, 8, 3))
h = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3)(inp)))
h = L.Add()([h, L.Conv2D(8, 1)(h)])
float_model = k.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
qat = tfmot.quantization.keras.quantize_model(float_model)
qat.compile("adam", "mse")
qat.fit(x_img, rng.random((8, 3)), epochs=1, verbose=0)
keep("tfmot_qat", qat, x_img)
for wrapper in qat.layers:  # the float model the wrappers hold (the kernel is the wrapper's): what unwrapping gives
    if hasattr(wrapper, "layer"):
        inner = wrapper.layer.name
        float_model.get_layer(inner).set_weights([v.numpy() for v in wrapper.weights if v.name.startswith(inner + "/")])
arrays["tfmot_qat_float"] = float_model.predict(x_img, verbose=0)
arrays["tfmot_qat_output_range"] = np.array([float(v.numpy()) for v in qat.layers[-1].weights
                                             if "post_activation" in v.name])

k.Sequential([L.Input((4,)), L.Lambda(lambda t: t * 2), L.Dense(2)]).save(os.path.join(out, "lambda.h5"))
m.save(os.path.join(out, "saved_model"), save_format="tf")
np.savez(os.path.join(out, "expected.npz"), **arrays)
np.savez(os.path.join(out, "data.npz"), x=x_img, y=y_img)
"""

PREDICTING = ["conv_bn_dense.h5", "conv_bn_dense.keras", "lstm_bidirectional.h5", "depthwise.h5",
              "conv_transpose.h5", "tfmot_pruned.h5", "tfmot_stripped.h5"]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A folder of files tf_keras 2 and tfmot wrote, with `expected.npz` (inputs and their predictions)."""
    folder = tmp_path_factory.mktemp("tf_keras_corpus")
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-c", CORPUS_SCRIPT, str(folder)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.fixture(scope="session")
def expected(corpus):
    with np.load(corpus / "expected.npz") as arrays:
        return dict(arrays)


def _inputs(name: str, expected: dict) -> np.ndarray:
    return expected["x_seq"] if name.startswith("lstm") else expected["x_img"]


@pytest.mark.parametrize("file", PREDICTING)
def test_a_tf_keras_file_predicts_what_tf_keras_predicted(corpus, expected, file):
    model = kstruct.load_model(corpus / file)
    name = file.rsplit(".", 1)[0]
    np.testing.assert_allclose(model.predict(_inputs(name, expected), verbose=0), expected[name], atol=1e-5)


def test_tfmot_pruning_wrappers_become_plain_layers_with_the_zeros_strip_pruning_keeps(corpus, expected):
    model = kstruct.load_model(corpus / "tfmot_pruned.h5")
    assert [type(layer).__name__ for layer in model.layers] == ["Conv2D", "Flatten", "Dense"]
    assert [layer.name for layer in model.layers] == [layer.name for layer in
                                                      kstruct.load_model(corpus / "tfmot_stripped.h5").layers]
    zeros = [int(np.sum(w == 0)) for w in model.get_weights()]
    assert zeros == expected["tfmot_stripped_zeros"].tolist()
    assert zeros[0] == int(np.prod(model.layers[0].kernel.shape)) // 2  # tfmot's 50%, kept exactly


def test_tfmot_compile_settings_are_translated_to_keras_3(corpus, expected):
    model = kstruct.load_model(corpus / "tfmot_pruned.h5")
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy) and model.loss.from_logits
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_tfmot_qat_wrappers_become_float_layers_with_a_warning(corpus, expected):
    with pytest.warns(UserWarning, match=r"7 tfmot quantization wrapper\(s\) unwrapped to plain float layers and "
                                         r"1 QuantizeLayer\(s\) removed; their fake-quant ranges are dropped"):
        model = kstruct.load_model(corpus / "tfmot_qat.h5")
    assert [type(layer).__name__ for layer in model.layers] == [
        "InputLayer", "Conv2D", "BatchNormalization", "ReLU", "Conv2D", "Add", "GlobalAveragePooling2D", "Dense"
    ]
    predicted = model.predict(expected["x_img"], verbose=0)
    np.testing.assert_allclose(predicted, expected["tfmot_qat_float"], atol=1e-5)  # the float model tfmot trained
    # and the fake-quantized model within a few of its output steps (8-bit over the output's range)
    low, high = expected["tfmot_qat_output_range"]
    assert np.max(np.abs(predicted - expected["tfmot_qat"])) < 16 * (high - low) / 255


def test_a_tf_keras_keras_file_is_compiled_for_keras_3_and_trains(corpus, expected):
    model = kstruct.load_model(corpus / "conv_bn_dense.keras")
    assert model.steps_per_execution == 1
    x, y = expected["x_img"], expected["y_img"]
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    assert scores["accuracy"] == pytest.approx(np.mean(np.argmax(expected["conv_bn_dense"], -1) == y))
    model.fit(x, y, epochs=1, verbose=0)


@pytest.mark.filterwarnings("ignore:.*fake-quant ranges are dropped")
def test_the_file_is_never_modified(corpus):
    before = {p.name: p.read_bytes() for p in corpus.glob("*.h5")}
    for name in before:
        try:
            kstruct.load_model(corpus / name)
        except kstruct.ModelFileError:
            pass
    assert {p.name: p.read_bytes() for p in corpus.glob("*.h5")} == before


def test_a_lambda_in_an_h5_file_is_refused_in_safe_mode_and_loads_when_asked(corpus):
    with pytest.raises(kstruct.ModelFileError) as caught:
        kstruct.load_model(corpus / "lambda.h5")
    assert caught.value.reason == "code"
    assert str(caught.value) == (
        f"{corpus}/lambda.h5 carries Python code (Requested the deserialization of a `Lambda` layer whose "
        "`function` is a Python lambda); Keras's safe mode refuses to run it. If you trust the file, pass "
        "safe_mode=False"
    )
    model = kstruct.load_model(corpus / "lambda.h5", safe_mode=False)
    x = np.ones((2, 4), "float32")
    dense = model.layers[-1]
    np.testing.assert_allclose(model.predict(x, verbose=0), 2 * x @ dense.kernel.numpy() + dense.bias.numpy(),
                               atol=1e-6)
    with pytest.raises(kstruct.ModelFileError):  # safe mode was off for that one load only
        kstruct.load_model(corpus / "lambda.h5")


def test_a_saved_model_folder_is_refused_with_what_to_do(corpus):
    with pytest.raises(kstruct.ModelFileError) as caught:
        kstruct.load_model(corpus / "saved_model")
    assert str(caught.value) == (
        f"{corpus}/saved_model is a TensorFlow SavedModel folder, which Keras 3 cannot load as a model; in tf_keras, "
        "load it and save it as one file (tf_keras.models.load_model(path).save('model.h5')), then load model.h5"
    )


def test_a_dropped_argument_that_matters_is_refused(corpus, tmp_path):
    copy = tmp_path / "time_major.h5"
    shutil.copyfile(corpus / "lstm_bidirectional.h5", copy)
    with h5py.File(copy, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][1]["config"]["time_major"] = True
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(kstruct.ModelFileError) as caught:
        kstruct.load_model(copy)
    assert str(caught.value) == (
        "layer 'lstm' (LSTM) has time_major=True, which Keras 3's LSTM does not support; rebuild that layer in "
        "Keras 3 and load its weights"
    )


def test_weights_only_h5_is_refused_with_the_fix(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save_weights(tmp_path / "only.weights.h5")
    with pytest.raises(kstruct.ModelFileError, match=r"holds weights only \(no model config\)"):
        kstruct.load_model(tmp_path / "only.weights.h5")


def test_kstruct_export_converts_a_tfmot_pruned_h5(corpus, expected, tmp_path, capsys):
    out = tmp_path / "pruned.tflite"
    assert main(["export", str(corpus / "tfmot_pruned.h5"), "--target", "float32", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    np.testing.assert_allclose(tflite_export.predict(out, expected["x_img"]), expected["tfmot_pruned"], atol=1e-5)


def test_console_script_optimizes_a_tf_keras_keras_file(corpus, tmp_path):
    done = kstruct_cli("optimize", corpus / "conv_bn_dense.keras", "--strategy", "prune(0.5, schedule='constant')",
                       "--data", corpus / "data.npz", "--target", "float32", "--epochs", "1", "--out", tmp_path / "o")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "model.tflite").read_bytes()[4:8] == b"TFL3"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "{c}/saved_model", "--target", "float32", "--out", "{t}/m.tflite"],
         "{c}/saved_model is a TensorFlow SavedModel folder, which Keras 3 cannot load as a model; in tf_keras, load "
         "it and save it as one file (tf_keras.models.load_model(path).save('model.h5')), then load model.h5"),
        (["export", "{c}/lambda.h5", "--target", "float32", "--out", "{t}/m.tflite"],
         "{c}/lambda.h5 carries Python code (Requested the deserialization of a `Lambda` layer whose `function` is a "
         "Python lambda), which kstruct does not run unless asked; if you trust the file, pass "
         "--unsafe-deserialization"),
        (["optimize", "{c}/expected.npz", "--strategy", "prune(0.5)", "--data", "{c}/data.npz", "--out", "{t}/o"],
         "{c}/expected.npz is not a Keras model file (.keras): it is a zip archive without config.json"),
    ],
)
def test_bad_legacy_files_on_the_command_line_are_one_line(corpus, tmp_path, capsys, argv, message):
    code = main([a.format(c=corpus, t=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err == f"kstruct: error: {message.format(c=corpus, t=tmp_path)}\n"
