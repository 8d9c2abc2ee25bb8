"""The `distill` step and `distill=true` through `kstruct.optimize`, the door users use."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kstruct
from kstruct.distillation import Distill
from kstruct.errors import DistillationError, StrategyError
from tests.conftest import compiled, tiny_cnn


@pytest.fixture(scope="module")
def digits(small_mnist):
    (x, y), (xt, yt) = small_mnist
    return (x[:256], y[:256]), (xt[:100], yt[:100])


@pytest.fixture(scope="module")
def teacher(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = compiled(tiny_cnn("teacher"))
    model.fit(x, y, epochs=2, verbose=0)
    return model


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_distill_step_parses_and_prints_back():
    assert str(kstruct.Strategy.parse("distill")) == "distill"
    step = kstruct.Strategy.parse("distill(epochs=2, temperature=2, alpha=0.3)").steps[0]
    assert isinstance(step, Distill) and (step.epochs, step.temperature, step.alpha) == (2, 2.0, 0.3)
    assert str(step) == "distill(epochs=2, temperature=2, alpha=0.3)"
    assert str(kstruct.Strategy.parse("prune(0.5, distill=true) + qat(distill=true)")) == (
        "prune(0.5, distill=true) + qat(distill=true)"
    )


def test_temperature_of_zero_is_one_clear_strategy_error():
    with pytest.raises(StrategyError) as caught:
        kstruct.Strategy.parse("distill(temperature=0)")
    assert str(caught.value).startswith(
        "Invalid arguments for step 'distill': Expected `temperature` > 0. Received: temperature=0 "
        "(at character 1: >>>distill(temperature=0)<<<)"
    )


def test_a_mismatched_teacher_fails_before_any_training(teacher, digits):
    (x, y), _ = digits
    inputs = keras.Input((28, 28, 1))
    other = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)), name="three_classes")
    with pytest.raises(DistillationError) as caught:
        kstruct.optimize(teacher, "distill", train_data=(x, y), teacher=other, verbose=0)
    assert str(caught.value) == (
        "Teacher `three_classes` outputs shape (None, 3), but the student `teacher` outputs (None, 10); "
        "distillation compares them class by class, so they must match. Pass a teacher= with the student's "
        "output shape."
    )


def test_a_multi_output_model_gets_one_error_naming_the_way_out(digits):
    (x, y), _ = digits
    inputs = keras.Input((28, 28, 1))
    features = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, {"digit": keras.layers.Dense(10, activation="softmax", name="digit")(features),
                                 "ink": keras.layers.Dense(1, name="ink")(features)}, name="two_heads")
    model.compile("adam", {"digit": "sparse_categorical_crossentropy", "ink": "mse"})
    before = _weights(model)
    with pytest.raises(DistillationError) as caught:
        kstruct.optimize(model, "prune(0.5, distill=true)", train_data=(x, {"digit": y, "ink": x.mean(axis=(1, 2, 3))}),
                         verbose=0)
    assert str(caught.value) == (
        "Distillation needs a model with one output. Received: teacher `two_heads` with 2 outputs. Distillation "
        "compares one output's class scores: for this model leave out the `distill` step and `distill=true`, and "
        "the steps train on the labels."
    )
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_distill_step_learns_from_a_softmax_teacher_on_tf_data_and_leaves_the_inputs_alone(teacher, digits):
    (x, y), validation = digits
    keras.utils.set_random_seed(1)
    student = compiled(tiny_cnn("student"))
    student_before, teacher_before = _weights(student), _weights(teacher)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    result = kstruct.optimize(
        student, "distill(epochs=2)", train_data=dataset, validation_data=validation, teacher=teacher, verbose=0
    )
    history = result.report.final.notes["history"]
    assert len(history["loss"]) == 2
    assert history["distillation_loss"][0] > 0.01  # softmax outputs give a real loss, not Keras's silent 0
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    assert all(np.array_equal(a, b) for a, b in zip(student_before, student.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights()))
    assert teacher.trainable and student.trainable


def test_teacher_argument_chooses_whom_the_student_imitates(digits):
    """A teacher that always says "7", with the labels weighted 0: the student learns to say 7."""
    (x, y), validation = digits
    inputs = keras.Input((28, 28, 1))
    dense = keras.layers.Dense(10, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(
        np.eye(10)[7] * 5.0))
    sevens = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)), name="says_seven")
    keras.utils.set_random_seed(2)
    student = compiled(tiny_cnn("student"))
    result = kstruct.optimize(
        student, "distill(epochs=2, alpha=0)", train_data=(x, y), validation_data=validation,
        teacher=sevens, verbose=0,
    )
    predictions = np.asarray(result.model.predict(validation[0], verbose=0)).argmax(-1)
    assert np.mean(predictions == 7) > 0.9


def test_training_steps_distill_with_the_flag_and_distill_keeps_pruned_zeros(teacher, digits):
    (x, y), validation = digits
    result = kstruct.optimize(
        teacher, "prune(0.5, distill=true) + distill(epochs=1)", train_data=(x, y), validation_data=validation,
        epochs=1, verbose=0,
    )
    pruned, distilled = result.report.stages[1:]
    assert pruned.notes["history"]["distillation_loss"][0] > 0  # the original model taught its pruned copy
    assert "distillation_loss" in distilled.notes["history"]
    assert pruned.sparsity == pytest.approx(0.5, abs=0.01)
    assert distilled.sparsity == pruned.sparsity  # fine-tuning did not regrow the pruned weights


@pytest.mark.slow
def test_a_student_with_noisy_labels_learns_more_from_a_good_teacher(mnist):
    """Built to show distillation: 300 digits, 60% of their labels replaced at random.

    The teacher (trained on 2,000 clean digits) knows better than the labels; the same
    student, the same epochs, learns from labels only (alpha=1) or mostly from the
    teacher (alpha=0.2). Over three seeds the distilled student is ahead every time.
    """
    (x, y), (xt, yt) = mnist
    keras.utils.set_random_seed(0)
    good = compiled(tiny_cnn("good_teacher"))
    good.fit(x[:2000], y[:2000], epochs=2, verbose=0)
    wins = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        xs, ys = x[2000 + 300 * seed : 2300 + 300 * seed], y[2000 + 300 * seed : 2300 + 300 * seed].copy()
        noisy = rng.random(len(ys)) < 0.6
        ys[noisy] = rng.integers(0, 10, int(noisy.sum()))
        accuracy = {}
        for alpha in (0.2, 1.0):
            keras.utils.set_random_seed(seed)
            student = compiled(tiny_cnn("student"))
            result = kstruct.optimize(
                student, f"distill(epochs=10, alpha={alpha})", train_data=(xs, ys),
                validation_data=(xt[:300], yt[:300]), teacher=good, verbose=0,
            )
            accuracy[alpha] = result.report.final.keras_accuracy
        wins.append(accuracy[0.2] > accuracy[1.0])
    assert all(wins)
