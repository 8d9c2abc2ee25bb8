"""`kstruct search`: one real run through the console script, bad input through `main`."""

import json

import keras
import numpy as np
import pytest

from kstruct.cli import main
from tests.console import error_line, kstruct
from tests.search.conftest import blobs, tiny_cnn


@pytest.fixture
def files(tmp_path):
    model_path = tmp_path / "model.keras"
    tiny_cnn().save(model_path)
    x, y = blobs(200)
    data_path = tmp_path / "data.npz"
    np.savez(data_path, x=x[:150], y=y[:150], x_val=x[150:], y_val=y[150:])
    return str(model_path), str(data_path)


def run_cli(argv):
    return main(["search", *map(str, argv)])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "latency=0.5"], "unknown budget key 'latency'; valid keys: tflite_bytes, latency_ms, params"),
        (["--budget", "latency_ms"], "--budget expects KEY=VALUE"),
        (["--budget", "latency_ms=fast"], "--budget latency_ms expects a number"),
        (["--target", "tpu"], "unknown target 'tpu'"),
        (["--tuner", "grid"], "unknown tuner 'grid'"),
        (["--worker"], "--chief/--worker need --oracle HOST:PORT"),
        (["--trials", "0"], "argument --trials: expected a positive integer. Received: 0"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(files, tmp_path, capsys, monkeypatch, extra, message):
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    model, data = files
    code = run_cli([model, "--data", data, "--trials", "1", "--out", tmp_path / "out", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("kstruct: error: ") and message in err
    assert "Traceback" not in err


def test_missing_files_are_reported_in_one_line(files, tmp_path, capsys):
    model, data = files
    assert run_cli([tmp_path / "nope.keras", "--data", data, "--out", tmp_path / "o"]) == 2
    assert "model file" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", inputs=np.zeros(3))
    assert run_cli([model, "--data", tmp_path / "bad.npz", "--out", tmp_path / "o"]) == 2
    assert "has no array 'x' or 'y' (found: inputs)" in capsys.readouterr().err


@pytest.mark.slow
def test_search_console_script_writes_the_best_model_trials_and_plot(files, tmp_path):
    model, data = files
    out = tmp_path / "out"
    done = kstruct("search", model, "--data", data, "--trials", "2", "--epochs", "1", "--budget", "params=100000",
                   "--out", out)
    assert done.returncode == 0, done.stderr
    assert (out / "best.keras").is_file() and (out / "pareto.png").is_file()
    summary = json.loads((out / "trials.json").read_text())
    assert len(summary["trials"]) == 2 and summary["budget"] == {"params": 100000}
    assert 0.0 <= summary["overhead"] <= 1.0 and summary["measure_seconds"] > 0
    assert "kstruct: best trial" in done.stdout and "overhead" in done.stdout and "in fit" in done.stdout


def test_objective_flag_searches_a_regression_model_on_its_loss(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.save(tmp_path / "reg.keras")
    x = np.random.default_rng(0).normal(size=(96, 8)).astype("float32")
    np.savez(tmp_path / "reg.npz", x=x[:64], y=x[:64, :1], x_val=x[64:], y_val=x[64:, :1])
    argv = [tmp_path / "reg.keras", "--data", tmp_path / "reg.npz", "--trials", "1", "--epochs", "1",
            "--target", "float32", "--out", tmp_path / "out"]
    assert run_cli(argv) == 2  # no accuracy to maximize: the error says to pass an objective
    assert "objective" in capsys.readouterr().err
    assert run_cli([*argv, "--objective", "val_loss", "--overwrite"]) == 0
    assert "kstruct: best trial 0" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "trials.json").read_text())["objective"] == "val_loss"


def test_a_budget_nothing_meets_exits_1_with_one_line(files, tmp_path, capsys):
    model, data = files
    code = run_cli([model, "--data", data, "--trials", "1", "--epochs", "1", "--budget", "tflite_bytes=10",
                    "--out", tmp_path / "out"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("kstruct: error: no trial met budget tflite_bytes <= 10") and err.count("\n") == 1


def test_bad_data_and_model_files_give_the_same_one_line_errors_as_kstruct_optimize(files, tmp_path, capsys):
    model, data = files
    junk = tmp_path / "junk.npz"
    junk.write_text("not an archive\nsecond line")
    assert run_cli([model, "--data", junk, "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{junk} is not a numpy .npz file: " in err
    bad_model = tmp_path / "junk.keras"
    bad_model.write_text("not a model")
    assert run_cli([bad_model, "--data", data, "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad_model} is not a Keras model file (.keras)" in err


def test_search_console_script_reports_a_bad_budget_without_a_traceback(files, tmp_path):
    model, data = files
    done = kstruct("search", model, "--data", data, "--budget", "latency=1", "--out", tmp_path / "o")
    assert "unknown budget key 'latency'" in error_line(done)
