"""The report measures each model as its task is judged: per output, with the metric named."""

import keras
import numpy as np
import pytest

import kstruct
import tflite_export
from kstruct.errors import KstructError

RNG = np.random.default_rng(0)


def _dense_model(units: int, activation: str | None, name: str = "out") -> keras.Model:
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation, name=name)(hidden))


def _features(n: int = 48) -> np.ndarray:
    return RNG.random((n, 6)).astype("float32")


def test_regression_reports_the_compiled_loss_and_absolute_differences():
    model = _dense_model(2, None)
    model.compile("adam", "mse")
    x, xv = _features(), _features(16)
    y, yv = x[:, :2] * 3, xv[:, :2] * 3
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, y), validation_data=(xv, yv),
                              epochs=2, batch_size=8, target="float32", verbose=0)
    final = result.report.final
    assert final.task == "regression" and final.metric == "mean_squared_error"
    assert final.keras_accuracy is None and final.agreement is None
    assert final.keras_metric == pytest.approx(result.model.evaluate(xv, yv, verbose=0), rel=1e-5)
    diff = np.abs(result.model.predict(xv, verbose=0) - tflite_export.predict(result.tflite, xv))
    assert final.max_abs_diff == pytest.approx(float(diff.max()))
    assert final.mean_abs_diff == pytest.approx(float(diff.mean()))
    assert "keras mse" in result.report.to_text() and "metric: mean_squared_error" in result.report.to_text()


def test_sigmoid_binary_reports_thresholded_accuracy_and_agreement():
    model = _dense_model(1, "sigmoid")
    model.compile("adam", "binary_crossentropy")
    x, xv = _features(), _features(32)
    y, yv = (x[:, 0] > 0.5).astype("float32"), (xv[:, 0] > 0.5).astype("float32")
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, y), validation_data=(xv, yv),
                              epochs=2, batch_size=8, target="int8", verbose=0)
    final = result.report.final
    assert final.task == "binary" and final.metric == "thresholded accuracy"
    keras_p = result.model.predict(xv, verbose=0)[:, 0]
    lite_p = tflite_export.predict(result.tflite, xv)[:, 0]
    assert final.keras_accuracy == pytest.approx(float(np.mean((keras_p > 0.5) == (yv > 0.5))))
    assert final.tflite_accuracy == pytest.approx(float(np.mean((lite_p > 0.5) == (yv > 0.5))))
    assert final.agreement == pytest.approx(float(np.mean((keras_p > 0.5) == (lite_p > 0.5))))


def _image_and_vector_model() -> keras.Model:
    image = keras.Input((8, 8, 1), name="image")
    vector = keras.Input((3,), name="vec")
    features = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image))
    joined = keras.layers.Concatenate()([features, keras.layers.Dense(4, name="vec_dense")(vector)])
    outputs = keras.layers.Dense(3, activation="softmax", name="cls")(joined)
    model = keras.Model([image, vector], outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("form", ["list", "dict"])
def test_multi_input_model_runs_end_to_end_to_an_int8_file_with_both_inputs(form):
    model = _image_and_vector_model()
    x = [RNG.random((48, 8, 8, 1)).astype("float32"), RNG.random((48, 3)).astype("float32")]
    if form == "dict":
        x = {"vec": x[1], "image": x[0]}
    y = RNG.integers(0, 3, 48)
    result = kstruct.optimize(model, "prune(0.5) + qat", train_data=(x, y), epochs=2, batch_size=8,
                              target="int8", verbose=0)
    analysis = tflite_export.analyze(result.tflite)
    assert sorted((t.name, t.dtype, tuple(t.shape)) for t in analysis.inputs) == [
        ("image", "int8", (1, 8, 8, 1)), ("vec", "int8", (1, 3))
    ]
    final = result.report.final
    assert final.stage == "qat" and final.metric == "accuracy"
    assert final.agreement >= 0.8
    # Keras and the file can differ in accuracy only on the inputs where they disagree.
    assert abs(final.keras_accuracy - final.tflite_accuracy) <= 1 - final.agreement + 1e-9


def test_dict_outputs_are_measured_per_output_with_their_own_metric_through_qat_to_int8():
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = {
        "label": keras.layers.Dense(3, activation="softmax", name="label")(hidden),
        "size": keras.layers.Dense(1, name="size")(hidden),
    }
    model = keras.Model(inputs, outputs)
    model.compile("adam", loss={"label": "sparse_categorical_crossentropy", "size": "mae"})
    x, xv = _features(), _features(16)
    y = {"label": RNG.integers(0, 3, 48), "size": x[:, :1]}
    yv = {"label": RNG.integers(0, 3, 16), "size": xv[:, :1]}
    result = kstruct.optimize(model, "prune(0.5) + qat", train_data=(x, y), validation_data=(xv, yv),
                              epochs=2, batch_size=8, target="int8", verbose=0)
    outputs = result.report.final.outputs
    assert {name: (o["task"], o["metric"]) for name, o in outputs.items()} == {
        "label": ("classification", "accuracy"), "size": ("regression", "mean_absolute_error"),
    }
    predicted = result.model.predict(xv, verbose=0)
    assert outputs["label"]["keras"] == pytest.approx(float(np.mean(predicted["label"].argmax(-1) == yv["label"])))
    assert outputs["size"]["keras"] == pytest.approx(float(np.mean(np.abs(predicted["size"] - yv["size"]))), rel=1e-5)
    assert "size (regression, mean_absolute_error)" in result.report.to_text()


def test_segmentation_is_scored_per_pixel_with_labels_of_shape_n_h_w():
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        keras.layers.Conv2D(3, 1, activation="softmax", name="pixels"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = RNG.random((40, 8, 8, 1)).astype("float32")
    y = (x[..., 0] * 3).astype("int32").clip(0, 2)
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, y), validation_data=(x[:16], y[:16]),
                              epochs=2, batch_size=4, target="float32", verbose=0)
    final = result.report.final
    predicted = result.model.predict(x[:16], verbose=0).argmax(-1)
    assert final.keras_accuracy == pytest.approx(float(np.mean(predicted == y[:16])))
    assert final.agreement == 1.0


def test_classification_reports_the_mean_top1_margin_beside_agreement():
    model = _dense_model(4, "softmax")
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _features(), RNG.integers(0, 4, 48)
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, y), validation_data=(x[:16], y[:16]),
                              epochs=2, batch_size=8, target="float32", verbose=0)
    top2 = np.sort(result.model.predict(x[:16], verbose=0), axis=-1)[:, -2:]
    assert result.report.final.mean_top1_margin == pytest.approx(float(np.mean(top2[:, 1] - top2[:, 0])), rel=1e-5)


def test_task_override_wins_and_unknown_tasks_are_refused():
    model = _dense_model(1, None)
    model.compile("adam", "mse")
    x, y = _features(), (RNG.random(48) > 0.5).astype("float32")
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, y), epochs=2, batch_size=8,
                              target="float32", task="binary", verbose=0)
    assert result.report.final.metric == "thresholded accuracy"
    with pytest.raises(KstructError) as err:
        kstruct.optimize(model, "prune(0.5)", train_data=(x, y), task="ranking")
    assert str(err.value) == (
        "Expected `task` to be one of ('classification', 'binary', 'regression'). Received: task='ranking'"
    )


def test_parameter_count_is_keras_count_params_frozen_layers_included_wrappers_excluded():
    inputs = keras.Input((6,), name="features")
    frozen = keras.layers.Dense(16, activation="relu", name="frozen")
    frozen.trainable = False
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(keras.layers.Dense(8, name="mid")(frozen(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _features(), RNG.integers(0, 3, 48)
    result = kstruct.optimize(model, "prune(0.5) + qat", train_data=(x, y), epochs=2, batch_size=8,
                              target="int8", verbose=0)
    assert [stage.params for stage in result.report.stages] == [model.count_params()] * 3
    assert model.count_params() == 6 * 16 + 16 + 16 * 8 + 8 + 8 * 3 + 3
    from kstruct.search.budget import count_params

    assert count_params(model) == model.count_params()


def test_sparsity_is_over_the_prunable_weights_and_the_layers_left_dense_are_named():
    """A 2,000-word Embedding holds 99.8% of the weights and pruning skips it: the headline says what its
    50% is over, with the model's non-zero fraction beside it."""
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(2000, 8, name="tokens"),
        keras.layers.GlobalAveragePooling1D(name="pool"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = RNG.integers(0, 2000, (48, 5)), RNG.integers(0, 3, 48)
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, y), epochs=2, batch_size=8,
                              target="float32", verbose=0)
    original, final = result.report.stages
    assert (final.prunable_params, final.prunable_layers, final.not_prunable) == (8 * 3, 1, ["tokens"])
    assert final.sparsity == 0.5 and final.params == 2000 * 8 + 8 * 3 + 3
    nonzero = sum(int(np.count_nonzero(w)) for w in result.model.get_weights())
    assert final.nonzero_params == nonzero and 0.99 < nonzero / final.params < 1.0
    headline = (f"sparsity 50.0% of the 24 weights in 1 prunable layer (model: {nonzero / 16027:.1%} of 16,027 "
                "parameters non-zero)")
    assert final.sparsity_headline() == headline
    assert f"(float32 tflite), {headline}, " in final.summary_line("float32")
    assert original.sparsity_headline().startswith("sparsity 0.0% of the 24 weights in 1 prunable layer (model: ")
    text, markdown = result.report.to_text(), result.report.to_markdown()
    assert text.splitlines()[-2:] == [
        f"final {headline}", "not prunable (left dense, outside the sparsity column): tokens",
    ]
    assert markdown.endswith(f"\n\nfinal {headline}\n\nnot prunable (left dense, outside the sparsity column): tokens")
    assert result.report.to_dict()["stages"][1]["prunable_layers"] == 1


@pytest.mark.parametrize(
    ("units", "activation", "loss", "task", "metric", "threshold"),
    [
        (4, "softmax", lambda y, p: keras.ops.mean(p), "classification", "accuracy", 0.5),
        (4, None, keras.losses.SparseCategoricalCrossentropy(from_logits=True), "classification", "accuracy", 0.5),
        (1, None, keras.losses.BinaryCrossentropy(from_logits=True), "binary", "thresholded accuracy", 0.0),
        (1, "sigmoid", "binary_crossentropy", "binary", "thresholded accuracy", 0.5),
        (1, None, "huber", "regression", "huber", 0.5),
        (3, None, "mae", "regression", "mean_absolute_error", 0.5),
    ],
)
def test_the_task_is_read_from_the_loss_then_the_activation(units, activation, loss, task, metric, threshold):
    from kstruct.engine.task import detect_tasks

    model = _dense_model(units, activation)
    model.compile("adam", loss)
    spec = detect_tasks(model)["out"]
    assert (spec.task, spec.metric, spec.threshold) == (task, metric, threshold)
