"""Data in the forms users have, checked up front with one clear error each, through kstruct.optimize."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kstruct
from kstruct.errors import DataError, KstructError, PruningError
from kstruct.engine.training import StepContext, TrainingData, split_validation, validation_split

RNG = np.random.default_rng(0)


def _classifier(classes: int = 3) -> keras.Model:
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="out")(hidden), name="clf")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n: int = 48, classes: int = 3):
    return RNG.random((n, 6)).astype("float32"), RNG.integers(0, classes, n)


def _repeating(n: int = 40):
    return tf.data.Dataset.from_tensor_slices(_data(n)).batch(8).repeat()


def test_infinite_dataset_without_validation_data_is_one_clear_error():
    with pytest.raises(DataError) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=_repeating(), target="float32")
    assert str(err.value) == (
        "`train_data` is an infinite dataset, so it cannot double as validation data. Pass a finite "
        "validation_data=... (and steps_per_epoch=...)."
    )


def test_infinite_dataset_without_steps_per_epoch_is_one_clear_error():
    with pytest.raises(DataError) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=_repeating(), validation_data=_data(10),
                         target="float32")
    assert str(err.value) == (
        "`train_data` is an infinite dataset (it repeats forever), so an epoch never ends. Pass "
        "steps_per_epoch=... (how many batches make an epoch) and a finite validation_data=..., "
        "or take a finite part of it with dataset.take(n)."
    )


def test_infinite_dataset_trains_with_steps_per_epoch_and_validation_data():
    result = kstruct.optimize(_classifier(), "prune(0.5)", train_data=_repeating(), steps_per_epoch=12,
                              validation_data=_data(10), epochs=1, target="float32", verbose=0)
    assert result.report.settings["steps_per_epoch"] == 12
    assert result.report.final.sparsity == pytest.approx(0.5, abs=0.02)


def test_nan_in_training_data_names_the_array_and_the_count():
    x, y = _data()
    x[3, 2], x[5, 1] = np.nan, np.inf
    with pytest.raises(DataError) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=(x, y), target="float32")
    assert str(err.value) == (
        "`train_data` inputs contain 1 NaN and 1 inf values (of 288). Remove or impute them before "
        "optimizing: they make training diverge and int8 calibration fail."
    )


def test_nan_in_one_input_of_validation_data_names_that_input():
    image, vector = keras.Input((4,), name="image"), keras.Input((3,), name="vec")
    model = keras.Model([image, vector], keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()([image, vector])))
    model.compile("adam", "sparse_categorical_crossentropy")
    xv = {"image": np.zeros((10, 4), "float32"), "vec": np.zeros((10, 3), "float32")}
    xv["vec"][0, 0] = np.nan
    train = ({"image": np.zeros((20, 4), "float32"), "vec": np.zeros((20, 3), "float32")}, np.zeros(20, "int32"))
    with pytest.raises(DataError, match=r"^`validation_data` inputs\['vec'\] contain 1 NaN and 0 inf values \(of 30\)"):
        kstruct.optimize(model, "prune(0.5)", train_data=train, validation_data=(xv, np.zeros(10, "int32")))


def test_labels_out_of_range_for_sparse_categorical_loss_give_the_range():
    x, y = _data()
    y[0], y[1] = 3, -1
    with pytest.raises(DataError) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=(x, y), target="float32")
    assert str(err.value) == (
        "`train_data` labels must be class indices in [0, 2] (sparse_categorical_crossentropy, 3 output "
        "units). Received: labels in [-1, 3], 2 of them outside. Remap the labels, or give the output one "
        "unit per class."
    )


def test_tokens_outside_the_embedding_vocabulary_are_refused():
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(10, 4, name="tokens"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = RNG.integers(0, 10, (40, 5))
    x[7, 1] = 12
    with pytest.raises(DataError) as err:
        kstruct.optimize(model, "prune(0.5)", train_data=(x, RNG.integers(0, 3, 40)), target="float32")
    assert str(err.value) == (
        "`train_data` inputs hold token ids in [0, 12], but Embedding `tokens` has input_dim=10 (ids 0..9). "
        "Map unknown tokens to a reserved id, or raise input_dim."
    )


def _mse(y_true, y_pred):  # a plain function: its compile config does not load back by itself
    return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


def test_metrics_of_a_model_compiled_with_a_plain_python_loss_are_kept():
    inputs = keras.Input((6,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Dense(8, name="hidden")(inputs)))
    model.compile("adam", loss=_mse, metrics=["mae"])
    x = RNG.random((48, 6)).astype("float32")
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, x[:, :2]), epochs=2, batch_size=8,
                              target="float32", verbose=0)
    scores = result.model.evaluate(x, x[:, :2], verbose=0, return_dict=True)
    assert set(scores) == {"loss", "mae"}
    assert result.report.final.metric == "_mse"


def test_an_unloadable_custom_metric_says_what_to_pass_and_passing_it_works():
    def my_metric(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_true - y_pred))

    inputs = keras.Input((6,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
    model.compile("adam", loss="mse", metrics=[my_metric])
    x = RNG.random((48, 6)).astype("float32")
    with pytest.raises(KstructError) as err:
        kstruct.optimize(model, "prune(0.5)", train_data=(x, x[:, :2]), epochs=2, batch_size=8, target="float32", verbose=0)
    assert str(err.value) == (
        f"kstruct compiles each new model as model `{model.name}` was compiled, but its compile config does not "
        "load back: Could not locate function 'my_metric'. Decorate the custom loss or metric with "
        "@keras.saving.register_keras_serializable(), or pass it to optimize (metrics=[...], loss=...)."
    )
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, x[:, :2]), epochs=2, batch_size=8,
                              target="float32", metrics=[my_metric], verbose=0)
    assert set(result.model.evaluate(x, x[:, :2], verbose=0, return_dict=True)) == {"loss", "my_metric"}


def test_hold_out_is_a_seeded_random_sample_not_the_last_rows():
    x = np.arange(100, dtype="float32")[:, None]
    y = (np.arange(100) >= 50).astype("int32")  # sorted by class: the last 10 rows are all class 1
    train, validation = split_validation(TrainingData((x, y)))
    again, same = split_validation(TrainingData((x, y)))
    held = validation.source[0][:, 0]
    assert len(held) == 10 and set(validation.source[1]) == {0, 1}
    assert np.array_equal(held, same.source[0][:, 0])
    assert sorted(np.concatenate([held, train.source[0][:, 0]])) == list(range(100))


def test_calibration_samples_are_drawn_from_the_whole_training_set():
    x = np.arange(1000, dtype="float32")[:, None]
    data = TrainingData((x, np.zeros(1000)))
    context = StepContext(train=data, validation=data)
    samples = context.representative_inputs(200)[:, 0]
    assert len(set(samples)) == 200 and samples.max() > 800
    assert np.array_equal(samples, context.representative_inputs(200)[:, 0])


def test_dict_inputs_with_wrong_keys_name_the_model_inputs():
    image, vector = keras.Input((4,), name="image"), keras.Input((3,), name="vec")
    model = keras.Model([image, vector], keras.layers.Dense(2)(keras.layers.Concatenate()([image, vector])))
    model.compile("adam", "mse")
    x = {"img": np.zeros((10, 4), "float32"), "vec": np.zeros((10, 3), "float32")}
    with pytest.raises(DataError) as err:
        kstruct.optimize(model, "prune(0.5)", train_data=(x, np.zeros((10, 2), "float32")))
    assert str(err.value) == (
        "`train_data` inputs are a dict with keys ['img', 'vec'], but model `"
        f"{model.name}` has inputs named ['image', 'vec']. Key the arrays by input name."
    )


def test_prune_on_too_little_data_fails_before_any_training_naming_the_fix(monkeypatch):
    monkeypatch.setattr(StepContext, "fit", lambda *args, **kwargs: pytest.fail("trained before refusing"))
    with pytest.raises(PruningError) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=_data(20), epochs=1, target="float32", verbose=0)
    assert str(err.value) == (
        "prune(0.5) would reach 0.0% sparsity, not 50%: its schedule has only 1 optimizer step(s) (1 epoch(s) of "
        "1 batch(es)). Give it more steps (more training data, more epochs, or a smaller batch_size), or prune at "
        "once: prune(0.5, schedule='constant')."
    )


def test_prune_at_once_on_the_same_little_data_reaches_its_sparsity():
    result = kstruct.optimize(_classifier(), "prune(0.5, schedule='constant')", train_data=_data(20), epochs=1,
                              target="float32", verbose=0)
    assert result.report.final.sparsity == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("labels", [np.array(["cat", "dog"] * 24), np.array(["cat", "dog"] * 24, dtype=object)])
def test_string_labels_are_refused_naming_their_dtype_and_the_fix(labels):
    x, _ = _data()
    with pytest.raises(DataError) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=(x, labels), target="float32")
    kind = "strings" if labels.dtype.kind == "U" else "Python objects"
    assert str(err.value) == (
        f"`train_data` labels have dtype {labels.dtype} ({kind}); Keras trains on numbers. Pass integer class ids, "
        "e.g. classes, y = np.unique(y, return_inverse=True)."
    )


def test_one_sample_says_it_is_too_few_to_hold_out_validation_data():
    with pytest.raises(DataError) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=_data(1), target="float32")
    assert str(err.value) == (
        "`train_data` has 1 sample: too few to hold out validation data (10%) and train on the rest. Pass "
        "validation_data=... (CLI: x_val and y_val in the .npz), or more samples."
    )


def test_a_list_of_samples_for_a_single_input_model_says_to_stack_them():
    x, y = _data(64)
    model = _classifier()
    with pytest.raises(DataError) as err:
        kstruct.optimize(model, "prune(0.5)", train_data=(list(x), y), target="float32")
    assert str(err.value) == (
        f"Model `{model.name}` has 1 input, but `train_data` x is a list of 64 arrays, which Keras reads as 64 "
        "separate inputs. Pass x as one array, e.g. np.stack(x)."
    )


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"epochs": 1.5}, KstructError, "Expected `epochs` to be a positive int. Received: epochs=1.5"),
        ({"epochs": True}, KstructError, "Expected `epochs` to be a positive int. Received: epochs=True"),
        ({"batch_size": True}, DataError, "Expected `batch_size` to be a positive int. Received: batch_size=True"),
        ({"batch_size": 10**20}, DataError,
         "Expected `batch_size` to be a positive int of at most 2147483647. "
         "Received: batch_size=100000000000000000000"),
    ],
)
def test_counts_must_be_positive_ints_tensorflow_can_hold(arguments, error, message):
    with pytest.raises(error) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=_data(), target="float32", **arguments)
    assert str(err.value) == message


def test_a_model_compiled_from_a_tf_keras_config_is_refused_before_any_work():
    model = _classifier()
    model.compile_from_config({**model.get_compile_config(), "steps_per_execution": None})  # as tf_keras files load
    with pytest.raises(KstructError) as err:
        kstruct.optimize(model, "prune(0.5)", train_data=_data(), target="float32")
    assert str(err.value) == (
        f"Model `{model.name}` was compiled from a tf_keras / Keras 2 compile config (steps_per_execution=None), "
        "with which Keras 3 cannot predict or train. Compile it again in Keras 3 first: "
        "model.compile(optimizer=..., loss=..., metrics=[...])."
    )


def test_a_dataset_of_unknown_size_is_counted_once_for_the_schedule():
    x, y = _data(40)

    def batches():
        for start in range(0, 40, 8):
            yield x[start : start + 8], y[start : start + 8]

    spec = (tf.TensorSpec((None, 6), tf.float32), tf.TensorSpec((None,), tf.int64))
    data = TrainingData(tf.data.Dataset.from_generator(batches, output_signature=spec))
    assert int(data.source.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    assert data.steps_per_epoch() == 5 and data.steps_per_epoch() == 5


def test_one_validation_rule_for_every_door():
    x, y = np.arange(40, dtype="float32").reshape(20, 2), np.arange(20) % 2
    train, validation, note = validation_split(TrainingData((x, y)))
    assert (len(train.arrays()[1]), len(validation.arrays()[1])) == (18, 2) and note.startswith("random 10%")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    train, validation, note = validation_split(TrainingData(dataset))
    assert validation is train and note == "train_data (no validation_data given)"
    with pytest.raises(DataError, match="infinite dataset, so it cannot double as validation data"):
        validation_split(TrainingData(dataset.repeat(), steps=2))
    given = TrainingData((x[:4], y[:4]))
    assert validation_split(TrainingData((x, y)), given)[1] is given


def test_array_data_with_sample_weights_trains_weighted_as_keras_fit_does():
    """(x, y, sample_weight), as Keras's fit and validation_data take it: it was refused as 'a tuple'."""
    x, y = _data(64)
    model = _classifier()
    before = {w.path: np.array(w) for w in model.weights}
    # weight 0 everywhere: every loss term is 0, so no gradient; the kept weights stay exactly as they were
    result = kstruct.optimize(model, "prune(0.5)", train_data=(x, y, np.zeros(64)),
                              validation_data=(x[:16], y[:16], np.ones(16)), epochs=1, batch_size=16,
                              target="float32", verbose=0)
    for layer in ("hidden", "out"):
        kernel = result.model.get_layer(layer).kernel.numpy()
        original = model.get_layer(layer).kernel.numpy()
        assert np.count_nonzero(kernel) == kernel.size // 2
        np.testing.assert_array_equal(kernel[kernel != 0], original[kernel != 0])
    assert all(np.array_equal(before[w.path], w) for w in model.weights)
    # the held-out split keeps each row's weight with its row, and fit gets the training rows' weights
    train, validation = split_validation(TrainingData((x, y, np.arange(64.0))))
    assert train.fit_arguments()["sample_weight"] is train.sample_weight
    assert sorted(np.concatenate([train.sample_weight, validation.sample_weight]).tolist()) == list(np.arange(64.0))
    for part in (train, validation):
        rows = [int(np.flatnonzero((x == row).all(axis=1))[0]) for row in part.source[0]]
        assert part.sample_weight.tolist() == [float(r) for r in rows]


@pytest.mark.parametrize(
    "data, message",
    [
        ((np.zeros((4, 6)), np.zeros(4), np.ones(3)),
         "The sample weights of `train_data` must be numbers, one per row (4). Received: an array of shape (3,) and dtype float64"),
        ((np.zeros((4, 6)), np.zeros(4), -np.ones(4)), "The sample weights of `train_data` must be finite and non-negative."),
        ((np.zeros((4, 6)), np.zeros(4), np.ones(4), np.ones(4)),
         "Expected `train_data` as (x, y) or (x, y, sample_weight) arrays, a tf.data.Dataset or a keras.utils.PyDataset. "
         "Received: a tuple of 4"),
    ],
    ids=["wrong-length", "negative", "four-parts"],
)
def test_bad_sample_weights_are_one_clear_error(data, message):
    with pytest.raises(DataError) as err:
        kstruct.optimize(_classifier(), "prune(0.5)", train_data=data, target="float32", verbose=0)
    assert str(err.value) == message
