"""The Distiller kstruct builds on keras.distillation: softmax outputs, teacher checks, settings."""

import keras
import numpy as np
import pytest

from kstruct.distillation import ClassScoreDistillation, check_teacher, distiller
from kstruct.distillation.distiller import outputs_probabilities
from kstruct.errors import DistillationError


def _classifier(ending: str, classes: int = 4, name: str = "model") -> keras.Model:
    inputs = keras.Input((6,))
    if ending == "dense_softmax":
        outputs = keras.layers.Dense(classes, activation="softmax")(inputs)
    elif ending == "softmax_layer":
        outputs = keras.layers.Softmax()(keras.layers.Dense(classes)(inputs))
    else:
        outputs = keras.layers.Dense(classes)(inputs)
    return keras.Model(inputs, outputs, name=name)


def test_probabilities_are_recognized_whatever_layer_applies_the_softmax():
    sample = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    assert outputs_probabilities(_classifier("dense_softmax"), sample)
    assert outputs_probabilities(_classifier("softmax_layer"), sample)
    assert not outputs_probabilities(_classifier("logits"), sample)


def test_softmax_outputs_give_exactly_the_loss_of_their_logits():
    rng = np.random.default_rng(1)
    teacher_logits = rng.normal(0, 3, (16, 5)).astype("float32")
    student_logits = rng.normal(0, 3, (16, 5)).astype("float32")
    softmax = lambda z: keras.ops.convert_to_numpy(keras.ops.softmax(z, axis=-1))
    reference = keras.distillation.LogitsDistillation(4.0, loss=keras.losses.KLDivergence())
    expected = float(reference.compute_loss(teacher_logits, student_logits))
    handled = ClassScoreDistillation(4.0, teacher_probabilities=True, student_probabilities=True)
    assert expected > 0.01
    assert float(handled.compute_loss(softmax(teacher_logits), softmax(student_logits))) == pytest.approx(expected, rel=1e-4)
    # Keras's own loss fed the probabilities computes something else: the silent error we avoid.
    assert float(reference.compute_loss(softmax(teacher_logits), softmax(student_logits))) < 0.5 * expected


def test_logits_loss_is_not_zero_for_negative_logits():
    # keras.distillation.LogitsDistillation() with its default string loss returns 0 here.
    teacher, student = np.log([[0.7, 0.2, 0.1]]).astype("float32"), np.log([[0.1, 0.2, 0.7]]).astype("float32")
    assert float(ClassScoreDistillation(4.0).compute_loss(teacher, student)) > 1.0


def test_a_teacher_with_other_outputs_gets_one_error_naming_both_shapes():
    teacher, student = _classifier("logits", 3, "big"), _classifier("logits", 4, "small")
    with pytest.raises(DistillationError) as caught:
        check_teacher(teacher, student)
    assert str(caught.value) == (
        "Teacher `big` outputs shape (None, 3), but the student `small` outputs (None, 4); distillation "
        "compares them class by class, so they must match. Pass a teacher= with the student's output shape."
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"temperature": 0}, "Expected `temperature` > 0. Received: temperature=0"),
        ({"temperature": -2.0}, "Expected `temperature` > 0. Received: temperature=-2.0"),
        ({"alpha": 1.5}, "Expected `alpha` (the weight of the label loss) in [0, 1]. Received: alpha=1.5"),
    ],
)
def test_bad_settings_get_one_clear_error(settings, message):
    student = _classifier("logits")
    student.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError) as caught:
        distiller(_classifier("logits"), student, **settings)
    assert str(caught.value) == message


def test_distiller_trains_the_student_and_leaves_the_teacher_untouched():
    keras.utils.set_random_seed(0)
    teacher, student = _classifier("dense_softmax", name="teacher"), _classifier("dense_softmax", name="student")
    teacher.layers[1].trainable = False  # a user's frozen layer must stay as the user set it
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    student.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = [w.copy() for w in student.get_weights()]
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = np.random.default_rng(1).integers(0, 4, 64)
    history = distiller(teacher, student).fit(x, y, epochs=2, verbose=0).history
    assert history["distillation_loss"][0] > 0
    assert not all(np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(teacher_weights, teacher.get_weights()))
    assert teacher.trainable and [layer.trainable for layer in teacher.layers] == [True, False]
