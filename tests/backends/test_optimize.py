"""`kstruct.optimize` end to end off TensorFlow: training on JAX or torch, conversion in a TensorFlow child, int8 parity."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tflite_export

import kstruct
from tests.console import ROOT
from tests.conftest import compiled, tiny_cnn
from tests.backends.conftest import BACKEND, off_tensorflow

pytestmark = [pytest.mark.backends, off_tensorflow]


@pytest.fixture(scope="module")
def digits(small_mnist):
    (x, y), (xt, yt) = small_mnist
    return x[:320], y[:320], xt[:128], yt[:128]


@pytest.fixture(scope="module")
def result(digits):
    x, y, xt, yt = digits
    model = compiled(tiny_cnn())
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return kstruct.optimize(
        model, "prune(0.5) + qat", train_data=(x, y), validation_data=(xt, yt), epochs=1, target="int8", verbose=0
    )


def test_every_stage_trains_off_tensorflow_and_the_report_says_so(result):
    report = result.report
    assert [stage.stage for stage in report.stages] == ["original", "prune(0.5)", "qat"]
    assert [stage.backend for stage in report.stages] == [None, BACKEND, BACKEND]
    assert report.settings["backend"] == BACKEND
    assert report.to_text().splitlines()[1].split()[-1] == "backend"
    assert json.loads(report.to_json())["stages"][2]["backend"] == BACKEND
    assert report.stages[1].sparsity == pytest.approx(0.5, abs=0.01)
    assert report.stages[2].sparsity == pytest.approx(0.5, abs=0.01)  # QAT keeps the pruned zeros


def test_int8_file_converted_off_tensorflow_matches_the_keras_model_off_tensorflow(result, digits):
    _, _, xt, yt = digits
    analysis = tflite_export.analyze(result.tflite)
    assert [t.dtype for t in analysis.inputs] == ["int8"] and [t.dtype for t in analysis.outputs] == ["int8"]
    assert analysis.tensors_not_int8_int32 == []
    keras_top1 = np.asarray(result.model.predict(xt, verbose=0)).argmax(-1)
    tflite_top1 = tflite_export.predict(result.tflite, xt).argmax(-1)
    agreement = float(np.mean(keras_top1 == tflite_top1))
    assert agreement >= 0.98, agreement
    notes = result.report.final.notes
    assert notes["top1_agreement"] == pytest.approx(agreement)
    assert abs(notes["int8_accuracy"] - notes["keras_qat_accuracy"]) <= 0.02
    assert result.report.final.tflite_accuracy == pytest.approx(float(np.mean(tflite_top1 == yt)))


def test_keras_file_saved_off_tensorflow_loads_off_tensorflow_and_converts_on_tensorflow_to_the_same_int8_predictions(
    result, digits, tmp_path
):
    x, _, xt, _ = digits
    out = tmp_path / "out"
    result.save(out)
    reloaded = keras.models.load_model(out / "model.keras")
    np.testing.assert_array_equal(reloaded.predict(xt, verbose=0), result.model.predict(xt, verbose=0))

    np.save(tmp_path / "calibration.npy", x[:200])  # the inputs optimize calibrated with
    # A user's TensorFlow process: import the library that defines the layers, load, convert.
    # (`kstruct export` would be the door, but it cannot load a QAT file until `import kstruct`
    # registers kstruct's layers; then this becomes `kstruct export ... --target int8`.)
    script = (
        "import sys, numpy as np, keras, tflite_export, kstruct.quantization\n"
        "assert keras.backend.backend() == 'tensorflow'\n"
        "blob = tflite_export.convert(sys.argv[1], 'int8', np.load(sys.argv[2]))\n"
        "open(sys.argv[3], 'wb').write(blob)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", script, str(out / "model.keras"), str(tmp_path / "calibration.npy"), str(tmp_path / "tf.tflite")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    on_tensorflow = (tmp_path / "tf.tflite").read_bytes()
    np.testing.assert_array_equal(tflite_export.predict(on_tensorflow, xt), tflite_export.predict(result.tflite, xt))
    assert on_tensorflow == result.tflite  # the same converter on the same weights: the same file



def test_the_keras_side_of_each_check_is_what_predict_returns_off_tensorflow():
    """On JAX through `predict` (one compiled function), on torch by calling the model."""
    from tests.tflite_export.test_verify import check_keras_outputs

    check_keras_outputs(300)
