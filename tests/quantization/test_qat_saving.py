"""QAT models save to `.keras`, load back identical (after `import kstruct` alone), and resume training."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest

import kstruct as kstruct_package
from kstruct import pruning
from kstruct.quantization import FakeQuant, quantization_report, quantize
from qat_helpers import calibrate, fresh_python


def _residual_qat():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    y = keras.layers.SeparableConv2D(4, 3, padding="same", activation="hard_silu")(x)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.LayerNormalization()(x)  # left in float
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.warns(UserWarning, match="layer_normalization"):
        return quantize(keras.Model(inputs, outputs))


def test_qat_model_round_trips_through_a_keras_file(tmp_path):
    qat = _residual_qat()
    x = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    calibrate(qat, x)
    path = tmp_path / "qat.keras"
    qat.save(path)

    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    assert str(quantization_report(loaded)) == str(quantization_report(qat))
    for original, reloaded in zip(qat.weights, loaded.weights):
        np.testing.assert_array_equal(original.numpy(), reloaded.numpy())


def test_qat_training_resumes_from_a_saved_model(float_cnn, digits, tmp_path):
    x_train, y_train, _, _ = digits
    qat = quantize(float_cnn)
    qat.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0)
    path = tmp_path / "qat.keras"
    qat.save(path)

    loaded = keras.saving.load_model(path)
    assert int(loaded.optimizer.iterations.numpy()) == int(qat.optimizer.iterations.numpy()) == 4
    ranges = [layer for layer in loaded.layers if isinstance(layer, FakeQuant)]
    assert ranges and all(float(layer.observed.numpy()) == 1.0 for layer in ranges)

    before = [w.numpy().copy() for w in loaded.trainable_weights]
    history = loaded.fit(x_train[256:512], y_train[256:512], epochs=1, batch_size=64, verbose=0)
    assert int(loaded.optimizer.iterations.numpy()) == 8
    assert np.isfinite(history.history["loss"][-1])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, loaded.trainable_weights))


def test_saved_qat_and_pruned_models_load_after_import_kstruct_alone(tmp_path):
    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    result = kstruct_package.optimize(model, "qat", train_data=(x, y), epochs=1, verbose=0)
    result.save(tmp_path / "qat")
    pruned = pruning.prune(model, pruning.ConstantSparsity(0.5))
    pruned.save(tmp_path / "pruned.keras")
    np.save(tmp_path / "x.npy", x)

    code = (
        "import kstruct, keras, numpy as np, sys\n"
        f"folder = {str(tmp_path)!r}\n"
        "x = np.load(folder + '/x.npy')\n"
        "np.save(folder + '/qat.npy', keras.models.load_model(folder + '/qat/model.keras').predict(x, verbose=0))\n"
        "np.save(folder + '/pruned.npy', keras.models.load_model(folder + '/pruned.keras').predict(x, verbose=0))\n"
    )
    completed = fresh_python(code)
    assert completed.returncode == 0, completed.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "qat.npy"), result.model.predict(x, verbose=0))
    np.testing.assert_array_equal(np.load(tmp_path / "pruned.npy"), pruned.predict(x, verbose=0))


def test_import_kstruct_stays_light_and_registers_once_keras_is_imported():
    code = (
        "import sys, kstruct\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'import kstruct loaded keras'\n"
        "import keras\n"
        "for name in ('FakeQuant', 'QuantizeWrapper', 'FloatPassthrough', 'PruneWrapper'):\n"
        "    assert keras.saving.get_registered_object('kstruct>' + name) is not None, name\n"
    )
    completed = fresh_python(code)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_every_module_registering_keras_objects_is_imported_on_keras_import():
    from kstruct import _keras_objects

    package = Path(kstruct_package.__file__).parent
    registering = {
        "kstruct." + ".".join(path.relative_to(package).with_suffix("").parts)
        for path in package.rglob("*.py")
        if re.search(r"^@keras\.saving\.register_keras_serializable", path.read_text(), re.M)
    }
    assert registering == set(_keras_objects.MODULES)
