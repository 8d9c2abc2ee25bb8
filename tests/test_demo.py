import json

import pytest

from kstruct.cli.demo_runner import run_demo


@pytest.mark.slow
def test_demo_writes_a_pruned_qat_int8_model_and_its_report(tmp_path, capsys):
    out = tmp_path / "out"
    result = run_demo(out, base_epochs=1, epochs=1)
    printed = capsys.readouterr().out
    assert "stage" in printed and "prune(0.75) + qat" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "layers.png", "model.keras", "model.tflite", "report.json", "report.md", "stages.png", "training.png"
    ]
    report = json.loads((out / "report.json").read_text())
    original, pruned, qat = report["stages"]
    assert pruned["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert qat["sparsity"] == pytest.approx(0.75, abs=0.01)  # QAT keeps the pruned zeros
    assert qat["tflite_gzip_bytes"] < 0.6 * original["tflite_gzip_bytes"]
    assert qat["tflite_accuracy"] > 0.85  # 400 real validation digits after 1+1+1 epochs
    test = report["settings"]["test"]  # the test split, reported apart from the validation table
    assert test["images"] == 1000 and test["final_tflite_accuracy"] > 0.85
    assert "test split (1000 images, unused until now)" in printed
    assert qat["agreement"] >= 0.995  # the int8 file reproduces the QAT model
    assert (out / "model.tflite").read_bytes() == result.tflite
