import subprocess
import sys

import numpy as np
import pytest
import tflite_export

from kstruct.cli import main
from tests.conftest import compiled, tiny_cnn


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_mnist):
    """A saved compiled model, a saved uncompiled one, and data files."""
    folder = tmp_path_factory.mktemp("cli")
    (x, y), (xt, yt) = small_mnist
    model = compiled(tiny_cnn())
    model.fit(x, y, epochs=1, verbose=0)
    model.save(folder / "model.keras")
    tiny_cnn().save(folder / "uncompiled.keras")
    np.savez(folder / "data.npz", x=x[:320], y=y[:320], x_val=xt[:100], y_val=yt[:100])
    np.savez(folder / "no_y.npz", x=x[:10], labels=y[:10])
    np.savez(folder / "flat.npz", x=x[:10].reshape(10, 784), y=y[:10])
    (folder / "junk.keras").write_bytes(b"not a zip file")
    return folder


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_optimize_writes_a_pruned_int8_file_whose_sparsity_matches_the_request(files, capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = run(
        capsys, "optimize", str(files / "model.keras"), "--strategy", "prune(0.6)",
        "--data", str(files / "data.npz"), "--target", "int8", "--out", str(out), "--epochs", "1",
    )
    assert code == 0
    assert "prune(0.6)" in stdout and "keras acc" in stdout
    analysis = tflite_export.analyze((out / "model.tflite").read_bytes())
    assert analysis.zero_weight_fraction == pytest.approx(0.6, abs=0.01)
    assert analysis.inputs[0].dtype == "int8"


@pytest.mark.parametrize(
    "args, message",
    [
        (["{f}/junk.keras", "--data", "{f}/data.npz"], "{f}/junk.keras is not a Keras model file (.keras)"),
        (["{f}/missing.keras", "--data", "{f}/data.npz"], "model file {f}/missing.keras does not exist"),
        (["{f}/model.keras", "--data", "{f}/no_y.npz"],
         "{f}/no_y.npz has no array 'y' (found: labels, x); save it with numpy.savez(path, x=inputs, y=labels)"),
        (["{f}/model.keras", "--data", "{f}/flat.npz"],
         "`train_data` inputs have shape (None, 784), but model `tiny_cnn` expects (None, 28, 28, 1)"),
        (["{f}/uncompiled.keras", "--data", "{f}/data.npz"], "is not compiled and no `loss` was given"),
    ],
)
def test_bad_input_ends_with_one_clear_line(files, capsys, tmp_path, args, message):
    argv = [a.format(f=files) for a in args]
    code, _, err = run(capsys, "optimize", *argv, "--strategy", "prune(0.5)", "--out", str(tmp_path / "o"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("kstruct: error: ")
    assert message.format(f=files) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "strategy, message",
    [
        ("prun(0.75)", "unknown step 'prun' (at character 1: >>>prun<<<(0.75)). Known steps: "),
        ("prune(1.5)", "Expected `sparsity` in [0, 1). Received: sparsity=1.5"),
    ],
)
def test_bad_strategies_are_refused_with_the_token_marked(files, capsys, tmp_path, strategy, message):
    code, _, err = run(
        capsys, "optimize", str(files / "model.keras"), "--strategy", strategy,
        "--data", str(files / "data.npz"), "--out", str(tmp_path / "o"),
    )
    assert code == 2 and message in err and err.count("\n") == 1


def test_existing_output_directory_is_not_overwritten(files, capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    code, _, err = run(
        capsys, "optimize", str(files / "model.keras"), "--strategy", "prune(0.5)",
        "--data", str(files / "data.npz"), "--out", str(tmp_path),
    )
    assert code == 2
    assert f"Output {tmp_path} already exists; pass --overwrite to replace it" in err
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_console_script_reports_errors_without_a_traceback(files, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "kstruct.cli", "optimize", str(files / "junk.keras"), "--strategy", "prune(0.5)",
         "--data", str(files / "data.npz"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("kstruct: error: ")
