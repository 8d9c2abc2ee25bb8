"""Figures with every report: the PNGs exist, decode, and plot exactly what report.json holds."""

import json
import sys
import warnings

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

import kstruct
from kstruct.report.plots import figures, training_series
from tests.conftest import compiled, tiny_cnn
from tests.console import kstruct as kstruct_cli

PNGS = ["layers.png", "stages.png", "training.png"]


@pytest.fixture(scope="module")
def run(small_mnist, tmp_path_factory):
    """One tiny run with a pruning step and a distill step, saved once."""
    (x, y), (xt, yt) = small_mnist
    model = compiled(tiny_cnn())
    model.fit(x[:256], y[:256], epochs=1, verbose=0)
    backend = matplotlib.get_backend()
    result = kstruct.optimize(
        model, "prune(0.5) + distill(epochs=2)", train_data=(x[:256], y[:256]), validation_data=(xt[:100], yt[:100]),
        epochs=1, verbose=0,
    )
    out = tmp_path_factory.mktemp("plots") / "out"
    result.save(out)
    return result, out, backend


def test_save_writes_three_pngs_of_sensible_size_embedded_in_report_md(run):
    _, out, _ = run
    for name in PNGS:
        image = imread(out / name)
        assert image.ndim == 3 and 400 <= image.shape[0] <= 2000 and 600 <= image.shape[1] <= 2500, name
        assert image[..., :3].std() > 0.05, f"{name} is blank"
    markdown = (out / "report.md").read_text()
    for name in PNGS:
        assert f"![{name[:-4]}]({name})" in markdown


def test_stages_figure_plots_the_reported_accuracy_size_and_latency(run):
    _, out, _ = run
    report = json.loads((out / "report.json").read_text())
    size_ax, latency_ax = figures(report)["stages"].axes
    tflite_size, keras_size = size_ax.get_lines()
    stages = report["stages"]
    assert list(tflite_size.get_xdata()) == pytest.approx([s["tflite_gzip_bytes"] / 1024 for s in stages])
    assert list(tflite_size.get_ydata()) == pytest.approx([s["tflite_accuracy"] for s in stages])
    assert list(keras_size.get_ydata()) == pytest.approx([s["keras_accuracy"] for s in stages])
    assert list(latency_ax.get_lines()[0].get_xdata()) == pytest.approx([s["latency_ms"] for s in stages])
    assert [t.get_text() for t in size_ax.texts] == ["original", "prune(0.5)", "distill(epochs=2)"]
    assert size_ax.get_xlabel() == "TFLite file, gzipped (KiB)"


def test_layers_figure_plots_per_layer_stats_before_and_after(run):
    result, out, _ = run
    report = json.loads((out / "report.json").read_text())
    assert [row["layer"] for row in report["layers"]] == ["conv", "hidden", "out"]
    for row in report["layers"]:
        assert row["before"]["sparsity"] == 0.0
        assert row["after"]["sparsity"] == pytest.approx(0.5, abs=0.01)  # distill kept the pruned zeros
        assert row["after"]["channels"] == row["before"]["channels"]
    sparsity_ax, channels_ax, distinct_ax = figures(report)["layers"].axes
    before, after = sparsity_ax.containers
    assert [bar.get_height() for bar in after] == pytest.approx([100 * r["after"]["sparsity"] for r in report["layers"]])
    before, after = distinct_ax.containers
    assert [bar.get_height() for bar in before] == [r["before"]["distinct_values"] for r in report["layers"]]
    assert [bar.get_height() for bar in channels_ax.containers[1]] == [r["after"]["live_channels"] for r in report["layers"]]
    assert [t.get_text() for t in distinct_ax.get_xticklabels()] == ["conv", "hidden", "out"]


def test_training_figure_plots_each_steps_history_one_after_the_other(run):
    _, out, _ = run
    report = json.loads((out / "report.json").read_text())
    prune_history = report["stages"][1]["notes"]["history"]
    distill_history = report["stages"][2]["notes"]["history"]
    loss_ax, accuracy_ax = figures(report)["training"].axes
    prune_line, distill_line = loss_ax.get_lines()
    assert list(prune_line.get_xdata()) == [1] and list(distill_line.get_xdata()) == [2, 3]
    assert list(prune_line.get_ydata()) == pytest.approx(prune_history["loss"])
    # the label loss, not the Distiller's weighted total, so the steps compare
    assert list(distill_line.get_ydata()) == pytest.approx(distill_history["student_loss"])
    assert list(accuracy_ax.get_lines()[1].get_ydata()) == pytest.approx(distill_history["accuracy"])
    assert prune_history["sparsity"] == pytest.approx([0.5], abs=0.01)
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["prune(0.5)", "distill(epochs=2)"]


def test_plot_returns_figures_and_leaves_pyplot_and_the_backend_alone(run):
    result, _, backend = run
    drawn = result.plot()
    assert sorted(drawn) == ["layers", "stages", "training"]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in drawn.values())
    assert matplotlib.get_backend() == backend
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_a_strategy_without_training_says_so_in_its_training_figure(run):
    result, _, _ = run
    data = result.report.to_dict()
    data["stages"] = data["stages"][:1]
    assert training_series(data["stages"][0]) == {"loss": [], "accuracy": []}
    loss_ax = figures(data)["training"].axes[0]
    assert [t.get_text() for t in loss_ax.texts] == ["no training step in this strategy"]


def test_tensorboard_dir_logs_every_training_step_or_says_what_is_missing(small_mnist, tmp_path):
    import importlib.util

    (x, y), _ = small_mnist
    model = compiled(tiny_cnn())
    logs = tmp_path / "tb"
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(kstruct.KstructError) as caught:
            kstruct.optimize(model, "prune(0.5)", train_data=(x[:64], y[:64]), tensorboard_dir=logs, verbose=0)
        assert str(caught.value) == (
            "`tensorboard_dir` needs the tensorboard package, which is not installed. "
            "Install it (pip install tensorboard) or leave tensorboard_dir out."
        )
        assert not logs.exists()
        return
    import tensorflow as tf

    kstruct.optimize(model, "prune(0.5)", train_data=(x[:64], y[:64]), epochs=1, tensorboard_dir=logs, verbose=0)
    runs = sorted(p.name for p in logs.iterdir())
    assert runs == ["1_prune_0.5_"]
    tags = set()
    for event_file in (logs / runs[0] / "train").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_loss", "epoch_sparsity"} <= tags


def test_pareto_figure_plots_the_trials_and_front(tmp_path):
    from kstruct.search.budget import Budget
    from kstruct.search.pareto import pareto_figure, plot_pareto
    from kstruct.search.result import pareto_front
    from kstruct.search.result import SearchResult, TrialRecord

    trials = [
        TrialRecord("0", "COMPLETED", {}, objective=0.9, tflite_bytes=4096, latency_ms=0.2, feasible=False),
        TrialRecord("1", "COMPLETED", {}, objective=0.8, tflite_bytes=2048, latency_ms=0.1, feasible=True),
        TrialRecord("2", "COMPLETED", {}, objective=0.7, tflite_bytes=3072, latency_ms=0.3, feasible=True),
    ]
    result = SearchResult(
        best_model=None, best_trial=trials[1], trials=trials, pareto_size=pareto_front(trials, "tflite_bytes"),
        pareto_latency=pareto_front(trials, "latency_ms"), objective="val_accuracy", direction="max",
        budget=Budget(tflite_bytes=3000), target="int8", directory=str(tmp_path), wall_seconds=1.0,
        train_seconds=1.0, overhead=0.0,
    )
    size_ax, _ = pareto_figure(result).axes
    front = size_ax.get_lines()[0]
    assert list(front.get_xdata()) == [2.0, 4.0] and list(front.get_ydata()) == [0.8, 0.9]
    assert size_ax.get_lines()[1].get_xdata()[0] == pytest.approx(3000 / 1024)  # the budget line
    path = plot_pareto(result, tmp_path / "pareto.png")
    assert imread(path).shape[0] >= 400


@pytest.mark.slow
def test_cli_optimize_writes_the_figures(small_mnist, tmp_path):
    (x, y), (xt, yt) = small_mnist
    model = compiled(tiny_cnn())
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", x=x[:128], y=y[:128], x_val=xt[:64], y_val=yt[:64])
    done = kstruct_cli("optimize", tmp_path / "model.keras", "--strategy", "prune(0.5)", "--data",
                       tmp_path / "data.npz", "--epochs", "1", "--out", tmp_path / "out", timeout=300)
    assert done.returncode == 0, done.stderr
    assert {"stages.png", "layers.png", "training.png"} <= {p.name for p in (tmp_path / "out").iterdir()}
    assert "stages.png, layers.png and training.png" in done.stdout


def test_figures_read_a_multi_output_accuracy_and_draw_a_regression_without_warnings(run):
    result, _, _ = run
    data = result.report.to_dict()
    multi, regression = data["stages"][1], data["stages"][2]
    multi["notes"]["history"] = {"loss": [0.9], "cls_loss": [0.6], "cls_accuracy": [0.7], "val_cls_accuracy": [0.1]}
    regression["notes"]["history"] = {"loss": [0.5, 0.4], "mae": [0.3, 0.2]}
    assert training_series(multi) == {"loss": [0.9], "accuracy": [0.7]}
    assert training_series(regression) == {"loss": [0.5, 0.4], "accuracy": []}
    data["stages"] = [data["stages"][0], regression]
    for stage in data["stages"]:
        stage["keras_accuracy"] = stage["tflite_accuracy"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned "No artists with labels found to put in legend"
        drawn = figures(data)
    accuracy_ax = drawn["training"].axes[1]
    assert drawn["stages"].axes[0].get_legend() is None
    assert [t.get_text() for t in accuracy_ax.texts] == ["no training accuracy recorded"]
    assert accuracy_ax.get_legend() is None
