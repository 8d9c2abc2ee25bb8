"""Every private TensorFlow / Keras Tuner internal listed in docs/internals.md still exists.

An upgrade that removes one fails here, naming it, instead of somewhere deep in a search
or a conversion.
"""

import importlib

import pytest


def _resolve(dotted: str):
    module_name, _, attributes = dotted.partition(":")
    value = importlib.import_module(module_name)
    for name in attributes.split(".") if attributes else []:
        value = getattr(value, name)
    return value


INTERNALS = [
    "tensorflow.python.framework.ops:_gradient_registry._registry",
    "tensorflow.python.framework.convert_to_constants:convert_variables_to_constants_v2",
    "keras_tuner.engine.trial:Trial.load",
    "keras_tuner:Tuner._build_hypermodel",
    "keras_tuner:Tuner._configure_tensorboard_dir",
    "keras:Model._symbolic_build",
]


@pytest.mark.parametrize("dotted", INTERNALS)
def test_internal_still_exists(dotted):
    try:
        _resolve(dotted)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{dotted} is gone from the installed version ({error}); see docs/internals.md for what uses it")


def test_the_converter_still_has_the_lowering_switch():
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(lambda x: x + 1.0).get_concrete_function(tf.TensorSpec((1,), tf.float32))]
    )
    assert hasattr(converter, "experimental_lower_to_saved_model"), (
        "TFLiteConverter.experimental_lower_to_saved_model is gone; see docs/internals.md"
    )


def test_keras_tuner_still_names_its_checkpoint_callback_save_best_epoch():
    try:
        tuner_utils = importlib.import_module("keras_tuner.src.engine.tuner_utils")
    except ImportError:
        tuner_utils = importlib.import_module("keras_tuner.engine.tuner_utils")
    assert isinstance(getattr(tuner_utils, "SaveBestEpoch", None), type), (
        "keras_tuner's SaveBestEpoch is gone; see docs/internals.md (checkpoint_once)"
    )


def test_the_optimizer_and_metrics_exist_before_fit_traces_its_step():
    """kstruct builds them first, so `fit` creates no variable in its trace and traces its step once."""
    import keras
    import numpy as np

    from kstruct.engine.training import build_training_state

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.zeros((8, 4), "float32"), np.zeros((8,), "int32")
    build_training_state(model, x[:4], y[:4])
    built = {variable.path for variable in [*model.optimizer.variables, *model.metrics_variables]}
    assert len(built) > len(model.trainable_variables)  # Adam's slots and the metrics' state
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert {variable.path for variable in [*model.optimizer.variables, *model.metrics_variables]} == built
