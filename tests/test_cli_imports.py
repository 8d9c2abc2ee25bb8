"""`--import MODULE` and `--unsafe-deserialization` on the commands that load a model (issue 20, item 6).

A `.keras` with a registered custom layer loads once the user names its module; a file
carrying Python code (a Lambda) is one line until the user opts in, for that one load.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tflite_export

from kstruct.cli import build_parser, main
from tests.console import kstruct

SCALE_MODULE = '''\
import keras


@keras.saving.register_keras_serializable(package="demo")
class Scale(keras.layers.Layer):
    """Multiplies by a learned vector: a custom layer the kstruct command cannot know."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A user's folder: scale_layers.py, custom.keras (Dense -> Scale -> Dense), lambda.keras and data.npz."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "scale_layers.py").write_text(SCALE_MODULE)
    namespace: dict = {}
    exec(compile(SCALE_MODULE, str(folder / "scale_layers.py"), "exec"), namespace)  # as the user's script would
    scale = namespace["Scale"]()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6), scale, keras.layers.Dense(3, activation="softmax")])
    scale.scale.assign(np.linspace(0.5, 2.0, 6).astype("float32"))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(folder / "custom.keras")
    rng = np.random.default_rng(0)
    x = rng.random((32, 8), dtype=np.float32)
    np.savez(folder / "data.npz", x=x, y=rng.integers(0, 3, 32))
    np.save(folder / "expected.npy", model.predict(x, verbose=0))
    lam = keras.Sequential([keras.Input((8,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(3)])
    lam.save(folder / "lambda.keras")
    np.save(folder / "lambda_expected.npy", lam.predict(x, verbose=0))
    keras.saving.get_custom_objects().pop("demo>Scale", None)  # only the console script's --import may register it
    return folder


@pytest.mark.parametrize("command", [["optimize", "--strategy", "ptq", "--data", "d.npz", "--out", "o"],
                                     ["export", "--target", "int8", "--out", "m.tflite"],
                                     ["search", "--data", "d.npz", "--out", "o"]])
def test_every_command_that_loads_a_model_takes_import_and_unsafe_deserialization(command):
    name, *rest = command
    args = build_parser().parse_args([name, "m.keras", *rest, "--import", "a", "--import", "b.c"])
    assert args.imports == ["a", "b.c"] and args.unsafe_deserialization is False
    assert build_parser().parse_args([name, "m.keras", *rest, "--unsafe-deserialization"]).unsafe_deserialization


def test_unsafe_deserialization_help_says_it_runs_code_from_the_file(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--unsafe-deserialization let the model file run the Python code it carries (Lambda layers): only for " \
           "files you trust" in help_text


def test_a_custom_layer_without_import_is_one_line_naming_the_option(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    code = main(["export", "custom.keras", "--target", "float32", "--out", str(tmp_path / "m.tflite")])
    assert code == 2 and capsys.readouterr().err == (
        "kstruct: error: Keras cannot load custom.keras: Could not locate class 'Scale'. Pass --import MODULE, the "
        "module that defines it (registered with @keras.saving.register_keras_serializable)\n"
    )


def test_export_with_import_converts_the_custom_layer(folder, tmp_path):
    out = tmp_path / "m.tflite"
    done = kstruct("export", "custom.keras", "--import", "scale_layers", "--target", "float32", "--out", out, cwd=folder)
    assert done.returncode == 0, done.stderr
    x = np.load(folder / "data.npz")["x"]
    np.testing.assert_allclose(tflite_export.predict(out, x), np.load(folder / "expected.npy"), atol=1e-5)


def test_optimize_with_import_runs_a_strategy_on_the_custom_layer_model(folder, tmp_path):
    out = tmp_path / "o"
    done = kstruct("optimize", "custom.keras", "--import", "scale_layers", "--strategy", "prune(0.5, schedule='constant')",
                   "--data", "data.npz", "--epochs", "1", "--target", "float32", "--out", out, cwd=folder)
    assert done.returncode == 0, done.stderr
    namespace: dict = {}
    exec(compile(SCALE_MODULE, "scale_layers.py", "exec"), namespace)
    try:
        result = keras.saving.load_model(out / "model.keras", compile=False)
    finally:
        keras.saving.get_custom_objects().pop("demo>Scale", None)
    assert [type(layer).__name__ for layer in result.layers] == ["Dense", "Scale", "Dense"]
    x = np.load(folder / "data.npz")["x"]
    np.testing.assert_allclose(tflite_export.predict(out / "model.tflite", x), result.predict(x, verbose=0), atol=1e-5)


def test_a_lambda_converts_with_unsafe_deserialization(folder, tmp_path):
    out = tmp_path / "m.tflite"
    done = kstruct("export", "lambda.keras", "--unsafe-deserialization", "--target", "float32", "--out", out, cwd=folder)
    assert done.returncode == 0, done.stderr
    x = np.load(folder / "data.npz")["x"]
    np.testing.assert_allclose(tflite_export.predict(out, x), np.load(folder / "lambda_expected.npy"), atol=1e-5)


def test_a_lambda_is_one_line_and_unsafe_deserialization_is_scoped_to_the_one_load(folder, tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.chdir(folder)
    argv = ["export", "lambda.keras", "--target", "float32", "--out"]
    assert main([*argv, str(tmp_path / "a.tflite")]) == 2
    assert capsys.readouterr().err == (
        "kstruct: error: lambda.keras carries Python code (Requested the deserialization of a `Lambda` layer whose "
        "`function` is a Python lambda), which kstruct does not run unless asked; if you trust the file, pass "
        "--unsafe-deserialization\n"
    )
    assert main([*argv, str(tmp_path / "b.tflite"), "--unsafe-deserialization"]) == 0, capsys.readouterr().err
    assert main([*argv, str(tmp_path / "c.tflite")]) == 2  # safe mode is back for the next load
    assert "carries Python code" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tflite"]


@pytest.mark.parametrize(
    "module, message",
    [
        ("scale_layers.py", "--import expects a Python module name such as my_layers. Received: 'scale_layers.py'; "
                            "name the module, not the file: --import scale_layers"),
        ("no_such_module", "--import no_such_module: No module named 'no_such_module'; run kstruct from the folder "
                           "that holds no_such_module.py or add that folder to PYTHONPATH"),
    ],
)
def test_a_bad_import_is_one_line(folder, tmp_path, capsys, monkeypatch, module, message):
    monkeypatch.chdir(folder)
    code = main(["export", "custom.keras", "--import", module, "--target", "float32", "--out", str(tmp_path / "m")])
    assert code == 2 and capsys.readouterr().err == f"kstruct: error: {message}\n"
