"""The `kstruct` command through its console script (a subprocess), and its bad-input paths through `main`."""

import json

import numpy as np
import pytest
import tflite_export

from kstruct.cli import main
from tests.conftest import compiled, tiny_cnn
from tests.console import error_line, kstruct

SUBCOMMANDS = ("optimize", "demo", "export", "inspect", "bench", "search")


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
    np.savez(folder / "no_y_val.npz", x=x[:10], y=y[:10], x_val=xt[:5])
    np.savez(folder / "weights_val_only.npz", x=x[:10], y=y[:10], sample_weight_val=np.ones(5))
    np.savez(folder / "short_weights.npz", x=x[:10], y=y[:10], sample_weight=np.ones(9))
    np.savez(folder / "flat.npz", x=x[:10].reshape(10, 784), y=y[:10])
    (folder / "junk.keras").write_bytes(b"not a zip file")
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_every_subcommand_prints_its_help_through_the_console_script(command):
    done = kstruct(*([command] if command else []), "--help", real=True)  # the installed script itself
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: kstruct {command or ''}".rstrip())
    if command is None:
        assert all(name in done.stdout for name in SUBCOMMANDS)


def test_optimize_console_script_writes_a_pruned_int8_file_whose_sparsity_matches_the_request(files, tmp_path):
    out = tmp_path / "out"
    done = kstruct(
        "optimize", files / "model.keras", "--strategy", "prune(0.6)", "--data", files / "data.npz",
        "--target", "int8", "--out", out, "--epochs", "1",
    )
    assert done.returncode == 0, done.stderr
    assert "prune(0.6)" in done.stdout and "keras acc" in done.stdout
    analysis = tflite_export.analyze((out / "model.tflite").read_bytes())
    assert analysis.zero_weight_fraction == pytest.approx(0.6, abs=0.01)
    assert analysis.inputs[0].dtype == "int8"
    assert json.loads((out / "report.json").read_text())["strategy"] == "prune(0.6)"


@pytest.mark.slow
def test_demo_console_script_trains_and_writes_a_ptq_int8_model(tmp_path):
    out = tmp_path / "demo"
    done = kstruct("demo", "--out", out, "--strategy", "ptq", "--epochs", "1")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "layers.png", "model.keras", "model.tflite", "report.json", "report.md", "stages.png", "training.png"
    ]
    assert json.loads((out / "report.json").read_text())["strategy"] == "ptq"
    analysis = tflite_export.analyze((out / "model.tflite").read_bytes())
    assert analysis.inputs[0].dtype == "int8"


def test_console_script_reports_errors_without_a_traceback(files, tmp_path):
    done = kstruct(
        "optimize", files / "junk.keras", "--strategy", "prune(0.5)", "--data", files / "data.npz",
        "--out", tmp_path / "o", real=True,  # TensorFlow loads in this run: its start-up lines stay hidden too
    )
    assert f"{files}/junk.keras is not a Keras model file (.keras)" in error_line(done)


def test_console_script_refuses_an_impossible_chain_before_loading_anything(files, tmp_path):
    done = kstruct(
        "optimize", files / "model.keras", "--strategy", "qat + prune(0.5)", "--data", files / "data.npz",
        "--out", tmp_path / "o",
    )
    assert error_line(done) == (
        "kstruct: error: Invalid strategy 'qat + prune(0.5)': prune(0.5) trains the model after qat has "
        "quantized it; put prune(0.5) before qat."
    )
    assert not (tmp_path / "o").exists()


def test_an_argument_error_is_one_line_not_a_usage_dump():
    done = kstruct("optimize", "m.keras", "--strategy", "prune(0.5)", "--data", "d.npz", "--out", "o",
                   "--batch-size", "0")
    assert error_line(done) == (
        "kstruct: error: argument --batch-size: expected a positive integer. Received: 0 "
        "(see kstruct optimize --help)"
    )
    assert done.stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["{f}/junk.keras", "--data", "{f}/data.npz"], "{f}/junk.keras is not a Keras model file (.keras)"),
        (["{f}/missing.keras", "--data", "{f}/data.npz"], "model file {f}/missing.keras does not exist"),
        (["{f}/model.keras", "--data", "{f}/no_y.npz"],
         "{f}/no_y.npz has no array 'y' (found: labels, x); save it with numpy.savez(path, x=inputs, y=labels)"),
        (["{f}/model.keras", "--data", "{f}/no_y_val.npz"],
         "{f}/no_y_val.npz has x_val but no y_val; save both (numpy.savez(path, x=..., y=..., x_val=..., "
         "y_val=...)) or neither"),
        (["{f}/model.keras", "--data", "{f}/weights_val_only.npz"],
         "{f}/weights_val_only.npz has sample_weight_val but no x_val and y_val; save them with it, or drop it"),
        (["{f}/model.keras", "--data", "{f}/short_weights.npz"],
         "The sample weights of `train_data` must be numbers, one per row (10). Received: an array of shape (9,) "
         "and dtype float64"),
        (["{f}/model.keras", "--data", "{f}/flat.npz"],
         "`train_data` inputs have shape (None, 784), but model `tiny_cnn` expects (None, 28, 28, 1)"),
        (["{f}/uncompiled.keras", "--data", "{f}/data.npz"], "is not compiled and no `loss` was given"),
        (["{f}/uncompiled.keras", "--data", "{f}/data.npz", "--loss", "nosuchloss"],
         "unknown loss 'nosuchloss'; pass a Keras loss name, e.g. --loss sparse_categorical_crossentropy"),
        (["{f}/model.keras", "--data", "{f}/data.npz", "--epochs", "0"],
         "argument --epochs: expected a positive integer. Received: 0"),
        (["{f}/model.keras", "--data", "{f}/data.npz", "--target", "int16x8", "--strategy", "qat"],
         "Invalid strategy 'qat' for target 'int16x8': qat serves only the targets int8, edgetpu, micro. "
         "Pass one of them as target (CLI: --target), or drop qat."),
        (["{f}/model.keras", "--data", "{f}/data.npz", "--target", "tpu"], "Received: target='tpu'"),
    ],
)
def test_bad_input_ends_with_one_clear_line(files, capsys, tmp_path, args, message):
    argv = [a.format(f=files) for a in args]
    if "--strategy" not in argv:
        argv += ["--strategy", "prune(0.5)"]
    code, _, err = run(capsys, "optimize", *argv, "--out", tmp_path / "o")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("kstruct: error: ")
    assert message.format(f=files) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "strategy, message",
    [
        ("prun(0.75)", "unknown step 'prun' (at character 1: >>>prun<<<(0.75)). Known steps: "),
        ("prune(1.5)", "Expected `sparsity` in [0, 1). Received: sparsity=1.5"),
        ("qat + qat", "qat trains the model after qat has quantized it; quantize once, as the last step: 'qat'."),
    ],
)
def test_bad_strategies_are_refused_with_the_token_marked(files, capsys, tmp_path, strategy, message):
    code, _, err = run(
        capsys, "optimize", files / "model.keras", "--strategy", strategy,
        "--data", files / "data.npz", "--out", tmp_path / "o",
    )
    assert code == 2 and message in err and err.count("\n") == 1


def test_existing_output_directory_is_not_overwritten(files, capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    code, _, err = run(
        capsys, "optimize", files / "model.keras", "--strategy", "prune(0.5)",
        "--data", files / "data.npz", "--out", tmp_path,
    )
    assert code == 2
    assert f"Output {tmp_path} already exists; pass --overwrite to replace it" in err
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_sample_weights_in_the_npz_come_with_their_rows(tmp_path):
    from kstruct.cli._files import load_training_npz

    x, y, w = np.zeros((6, 2)), np.arange(6), np.linspace(0, 1, 6)
    np.savez(tmp_path / "weighted.npz", x=x, y=y, sample_weight=w, x_val=x[:2], y_val=y[:2], sample_weight_val=w[:2])
    train, validation = load_training_npz(str(tmp_path / "weighted.npz"))
    assert [a.tolist() for a in train] == [x.tolist(), y.tolist(), w.tolist()]
    assert [a.tolist() for a in validation] == [x[:2].tolist(), y[:2].tolist(), w[:2].tolist()]
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    assert [len(part) for part in load_training_npz(str(tmp_path / "plain.npz"))[:1]] == [2]
