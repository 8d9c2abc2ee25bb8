"""`kstruct export|inspect|bench`: one real run of each through the console script, bad input through `main`."""

import json
import os

import numpy as np
import pytest

from kstruct.cli import main
from kstruct.outputs import write_file
from tests.console import error_line, kstruct


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory, trained_cnn):
    path = tmp_path_factory.mktemp("models") / "cnn.keras"
    trained_cnn.save(path)
    return str(path)


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory, calibration):
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    np.savez(path, x=calibration[:50])
    return str(path)


def _one_error_line(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kstruct: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_export_inspect_and_bench_run_through_the_console_script(tmp_path, keras_file, calib_file):
    out = tmp_path / "m.tflite"
    done = kstruct("export", keras_file, "--target", "int8", "--data", calib_file, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and out.read_bytes()[4:8] == b"TFL3"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temp file left behind

    done = kstruct("inspect", out, "--json")
    assert done.returncode == 0, done.stderr
    analysis = json.loads(done.stdout)
    assert analysis["inputs"][0]["dtype"] == "int8" and analysis["outputs"][0]["dtype"] == "int8"

    done = kstruct("bench", out, "--runs", "3", "--threads", "1")
    assert done.returncode == 0, done.stderr
    timing = json.loads(done.stdout)
    assert timing["median_ms"] > 0 and timing["accelerator"] == "cpu"


def test_an_export_error_from_the_console_script_is_one_line(tmp_path, keras_file):
    done = kstruct("export", keras_file, "--target", "int8", "--out", tmp_path / "m.tflite")
    assert "representative_data" in error_line(done)
    assert not (tmp_path / "m.tflite").exists()


def test_export_refuses_to_overwrite_without_the_flag(tmp_path, keras_file, capsys):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"keep me")
    code, _, err = run(["export", keras_file, "--target", "float32", "--out", out], capsys)
    assert "exists; pass --overwrite" in _one_error_line(code, err)
    assert out.read_bytes() == b"keep me"
    code, _, _ = run(["export", keras_file, "--target", "float32", "--out", out, "--overwrite"], capsys)
    assert code == 0 and out.read_bytes()[4:8] == b"TFL3"


def test_export_unknown_target_lists_valid_ones(tmp_path, keras_file, capsys):
    code, _, err = run(["export", keras_file, "--target", "foo", "--out", tmp_path / "m.tflite"], capsys)
    assert _one_error_line(code, err) == (
        "kstruct: error: Expected `target` to be one of ('float32', 'dynamic', 'float16', 'int8', "
        "'int16x8', 'gpu', 'edgetpu', 'micro', 'int4', 'int4-weights'). Received: target='foo'"
    )


def test_export_missing_model_file(tmp_path, capsys):
    code, _, err = run(["export", tmp_path / "none.keras", "--target", "float32", "--out", tmp_path / "m.tflite"], capsys)
    assert "does not exist" in _one_error_line(code, err)


def test_export_calibration_of_the_wrong_shape(tmp_path, keras_file, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 32, 32, 3), np.float32))
    code, _, err = run(["export", keras_file, "--target", "int8", "--data", bad, "--out", tmp_path / "m.tflite"], capsys)
    assert _one_error_line(code, err) == (
        "kstruct: error: representative_data has shape (4, 32, 32, 3); the model expects inputs of shape (None, 28, 28, 1)"
    )
    assert not (tmp_path / "m.tflite").exists()


def test_inspect_prints_text(tmp_path, cnn_blob, capsys):
    path = tmp_path / "m.tflite"
    path.write_bytes(cnn_blob("int8"))
    code, out, _ = run(["inspect", path], capsys)
    assert code == 0 and "CONV_2D x2" in out and "int8[1, 28, 28, 1]" in out


def test_inspect_rejects_a_file_that_is_not_tflite(tmp_path, capsys):
    path = tmp_path / "m.tflite"
    path.write_text("hello, not a flatbuffer")
    code, _, err = run(["inspect", path], capsys)
    assert "is not a TFLite file" in _one_error_line(code, err)


def test_inspect_missing_file(tmp_path, capsys):
    code, _, err = run(["inspect", tmp_path / "x.tflite"], capsys)
    assert "does not exist" in _one_error_line(code, err)


def test_bench_bad_accelerator_is_one_line(tmp_path, cnn_blob, capsys):
    path = tmp_path / "m.tflite"
    path.write_bytes(cnn_blob("float32"))
    code, _, err = run(["bench", path, "--accelerator", "tpu"], capsys)
    assert "Expected `accelerator` to be one of ('cpu', 'gpu')" in _one_error_line(code, err)


def test_bench_zero_runs_is_refused_by_the_parser(tmp_path, capsys):
    code, _, err = run(["bench", tmp_path / "m.tflite", "--runs", "0"], capsys)
    assert _one_error_line(code, err) == (
        "kstruct: error: argument --runs: expected a positive integer. Received: 0 (see kstruct bench --help)"
    )


def test_write_file_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_file(tmp_path / "m.tflite", b"data", overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_a_compatibility_error_is_one_line_with_exit_2(tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((4, 4, 4, 1)), keras.layers.Conv3D(2, 2), keras.layers.Flatten()])
    model.save(tmp_path / "conv3d.keras")
    code, _, err = run(["export", tmp_path / "conv3d.keras", "--target", "gpu", "--out", tmp_path / "m.tflite"], capsys)
    line = _one_error_line(code, err)
    assert line.startswith("kstruct: error: The converted file does not suit target='gpu': op #")
    assert line.endswith(" CONV_3D is not supported by the GPU delegate")
    assert not (tmp_path / "m.tflite").exists()
