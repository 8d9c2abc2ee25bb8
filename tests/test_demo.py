import json

import pytest

from kstruct.demo import run_demo


@pytest.mark.slow
def test_demo_writes_a_pruned_int8_model_and_its_report(tmp_path, capsys):
    out = tmp_path / "out"
    result = run_demo(out, base_epochs=1, epochs=1)
    printed = capsys.readouterr().out
    assert "stage" in printed and "prune(0.75)" in printed
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "model.tflite", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    original, pruned = report["stages"]
    assert pruned["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert pruned["tflite_gzip_bytes"] < 0.6 * original["tflite_gzip_bytes"]
    assert pruned["tflite_accuracy"] > 0.85  # 1,000 real test digits after 1+1 epochs
    assert (out / "model.tflite").read_bytes() == result.tflite
