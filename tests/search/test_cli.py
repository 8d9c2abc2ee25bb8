import argparse
import json

import numpy as np
import pytest

from kstruct.cli_search import add_subcommands
from tests.search.conftest import blobs, tiny_cnn


def parse(argv):
    parser = argparse.ArgumentParser(prog="kstruct")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def files(tmp_path):
    model_path = tmp_path / "model.keras"
    tiny_cnn().save(model_path)
    x, y = blobs(200)
    data_path = tmp_path / "data.npz"
    np.savez(data_path, x=x[:150], y=y[:150], x_val=x[150:], y_val=y[150:])
    return str(model_path), str(data_path)


def run_cli(argv):
    args = parse(argv)
    return args.func(args)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "latency=0.5"], "unknown budget key 'latency'; valid keys: tflite_bytes, latency_ms, params"),
        (["--budget", "latency_ms"], "--budget expects KEY=VALUE"),
        (["--budget", "latency_ms=fast"], "--budget latency_ms expects a number"),
        (["--target", "tpu"], "unknown target 'tpu'"),
        (["--tuner", "grid"], "unknown tuner 'grid'"),
        (["--worker"], "--chief/--worker need --oracle HOST:PORT"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(files, tmp_path, capsys, monkeypatch, extra, message):
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    model, data = files
    code = run_cli(["search", model, "--data", data, "--trials", "1", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("kstruct: error: ") and message in err
    assert "Traceback" not in err


def test_missing_files_are_reported_in_one_line(files, tmp_path, capsys):
    model, data = files
    assert run_cli(["search", str(tmp_path / "nope.keras"), "--data", data, "--out", str(tmp_path / "o")]) == 2
    assert "model file" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", inputs=np.zeros(3))
    assert run_cli(["search", model, "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "has no array 'x' or 'y' (found: inputs)" in capsys.readouterr().err


def test_search_command_writes_the_best_model_trials_and_plot(files, tmp_path, capsys):
    model, data = files
    out = tmp_path / "out"
    code = run_cli(["search", model, "--data", data, "--trials", "2", "--epochs", "1", "--budget", "params=100000",
                    "--out", str(out)])
    assert code == 0
    assert (out / "best.keras").is_file() and (out / "pareto.png").is_file()
    summary = json.loads((out / "trials.json").read_text())
    assert len(summary["trials"]) == 2 and summary["budget"] == {"params": 100000}
    assert 0.0 <= summary["overhead"] <= 1.0 and summary["measure_seconds"] > 0
    out_text = capsys.readouterr().out
    assert "kstruct: best trial" in out_text and "overhead" in out_text and "in fit" in out_text


def test_a_budget_nothing_meets_exits_1_with_one_line(files, tmp_path, capsys):
    model, data = files
    code = run_cli(["search", model, "--data", data, "--trials", "1", "--epochs", "1", "--budget", "tflite_bytes=10",
                    "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("kstruct: error: no trial met budget tflite_bytes <= 10") and err.count("\n") == 1


def test_bad_data_and_model_files_give_the_same_one_line_errors_as_kstruct_optimize(files, tmp_path, capsys):
    model, data = files
    junk = tmp_path / "junk.npz"
    junk.write_text("not an archive\nsecond line")
    assert run_cli(["search", model, "--data", str(junk), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{junk} is not a numpy .npz file: " in err
    bad_model = tmp_path / "junk.keras"
    bad_model.write_text("not a model")
    assert run_cli(["search", str(bad_model), "--data", data, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad_model} is not a Keras model file (.keras)" in err
