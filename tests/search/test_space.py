import warnings

import keras
import keras_tuner
import numpy as np
import pytest

from kstruct.errors import UnsupportedModelError
from kstruct.search import space
from tests.search.conftest import blobs, residual_model, tiny_cnn


def sample_values(hypermodel, seed):
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    rng = np.random.default_rng(seed)
    for p in hp.space:
        values = p.values if hasattr(p, "values") else [True, False]
        hp.values[p.name] = values[rng.integers(len(values))]
    return hp


def original_choices(hypermodel):
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    for choice in hypermodel.activations:
        hp.values[choice.name] = choice.original
    return hp


def test_every_sampled_sequential_model_builds_and_trains_one_step():
    model = tiny_cnn()
    hypermodel = space(model)
    x, y = blobs(16)
    for seed in range(4):
        built = hypermodel.build(sample_values(hypermodel, seed))
        assert built.output_shape == model.output_shape
        assert built.compiled
        built.fit(x, y, epochs=1, steps_per_epoch=1, batch_size=16, verbose=0)


def test_sequential_space_never_narrows_the_output_layer_and_can_drop_the_repeated_conv():
    hypermodel = space(tiny_cnn())
    widened = {layer for choice in hypermodel.widths for layer in choice.layers}
    assert "classifier" not in widened
    assert {"conv1", "dense1"} <= widened
    assert [c.layers[0] for c in hypermodel.depths] == ["conv_same"]
    hp = sample_values(hypermodel, 0)
    hp.values["keep/conv_same"] = False
    built = hypermodel.build(hp)
    assert "conv_same" not in [layer.name for layer in built.layers]


def test_full_width_original_activations_reproduce_the_original_model():
    for model in (tiny_cnn(), residual_model()):
        hypermodel = space(model)
        built = hypermodel.build(original_choices(hypermodel))
        x = np.random.default_rng(0).normal(size=(4, *model.input_shape[1:])).astype("float32")
        np.testing.assert_allclose(built.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_layers_feeding_one_add_share_one_width_choice():
    hypermodel = space(residual_model())
    groups = {choice.name: set(choice.layers) for choice in hypermodel.widths}
    tied = [layers for layers in groups.values() if "stem" in layers]
    assert tied == [{"stem", "block1_conv", "block2_conv"}]
    assert {"side"} in groups.values()  # Concatenate needs no tie
    hp = original_choices(hypermodel)
    hp.values["width/stem"] = 0.5
    built = hypermodel.build(hp)
    for name in ("stem", "block1_conv", "block2_conv"):
        assert built.get_layer(name).filters == 4
    assert built.get_layer("classifier").kernel.shape[0] == 4 + 4


def test_residual_branches_can_be_dropped_and_the_model_still_trains():
    hypermodel = space(residual_model())
    assert {c.name for c in hypermodel.depths if c.kind == "residual"} == {"keep/block1_add", "keep/block2_add"}
    hp = original_choices(hypermodel)
    hp.values["keep/block1_add"] = False
    built = hypermodel.build(hp)
    names = {layer.name for layer in built.layers}
    assert not names & {"block1_conv", "block1_bn", "block1_relu", "block1_add"}
    x, y = blobs(8, shape=(8, 8, 3))
    built.fit(x, y, epochs=1, batch_size=8, verbose=0)


def test_narrowed_layer_keeps_its_filters_of_largest_l1_norm_and_the_next_layer_follows():
    model = tiny_cnn()
    kernel, bias = model.get_layer("dense1").get_weights()
    scale = np.linspace(0.1, 2.0, kernel.shape[1])[::-1]  # filter 0 largest
    np.random.default_rng(1).shuffle(scale)
    model.get_layer("dense1").set_weights([kernel * scale, bias])
    hypermodel = space(model, depth=False, activations=False)
    hp = original_choices(hypermodel)
    hp.values["width/dense1"] = 0.25
    built = hypermodel.build(hp)
    l1 = np.abs(kernel * scale).sum(axis=0)
    kept = np.sort(np.argsort(-l1)[:4])
    np.testing.assert_allclose(built.get_layer("dense1").get_weights()[0], (kernel * scale)[:, kept])
    classifier = model.get_layer("classifier").get_weights()[0]
    np.testing.assert_allclose(built.get_layer("classifier").get_weights()[0], classifier[kept])


def test_flatten_then_dense_keeps_the_rows_of_the_kept_channels():
    model = tiny_cnn()
    hypermodel = space(model, depth=False, activations=False)
    hp = original_choices(hypermodel)
    hp.values["width/conv1"] = 0.5  # conv_same is tied to conv1 only when its block may be dropped
    hp.values["width/conv_same"] = 0.5
    built = hypermodel.build(hp)
    assert built.get_layer("dense1").kernel.shape[0] == 3 * 3 * 4
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    assert built.predict(x, verbose=0).shape == (2, 3)


def test_a_subclassed_model_gets_a_clear_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(UnsupportedModelError, match="subclassed model"):
        space(net)


def test_bad_widths_are_refused():
    with pytest.raises(ValueError, match="widths"):
        space(tiny_cnn(), widths=(0.0, 1.0))


@pytest.mark.slow
def test_every_sampled_mobilenetv2_builds_and_trains_one_step():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hypermodel = space(model)
    assert len(hypermodel.depths) == 10  # the ten identity-shortcut blocks of MobileNetV2
    groups = [set(c.layers) for c in hypermodel.widths]
    assert {"block_3_project", "block_4_project", "block_5_project"} in groups  # one stage, tied by its Adds
    x = np.random.default_rng(0).normal(size=(2, 96, 96, 3)).astype("float32")
    y = np.array([0, 1])
    for seed in range(3):
        built = hypermodel.build(sample_values(hypermodel, seed))
        assert built.output_shape == model.output_shape
        built.run_eagerly = True  # one step each: tracing the train function would cost 10x the step
        built.fit(x, y, epochs=1, batch_size=2, verbose=0)
        keras.backend.clear_session()


def test_a_trial_on_a_tf_data_dataset_has_its_training_state_before_fit_traces_its_step():
    """Built from the dataset's element_spec (one row of zeros), as for array data, so the trial's train
    step is traced once; it was traced twice on a dataset (Keras made the variables in the first trace)."""
    import tensorflow as tf

    from kstruct.engine.training import spec_rows

    hypermodel = space(tiny_cnn())
    hp = original_choices(hypermodel)
    model = hypermodel.build(hp)
    x, y = blobs(16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    at_fit = []
    fit = model.fit
    model.fit = lambda *args, **kwargs: (at_fit.append(len(model.optimizer.variables)), fit(*args, **kwargs))[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras's "shuffle=True was passed ... ignored" for a dataset, per trial
        hypermodel.fit(hp, model, x=dataset, epochs=1, verbose=0)
    assert at_fit[0] > len(model.trainable_variables)  # Adam's slots existed when fit began
    assert len(model.optimizer.variables) == at_fit[0]  # and fit made none
    rows_x, rows_y = spec_rows(dataset)
    assert (rows_x.shape, rows_x.dtype, rows_y.shape, rows_y.dtype) == ((1, 8, 8, 1), np.float32, (1,), np.int32)
    strings = tf.data.Dataset.from_tensor_slices((np.array([b"a", b"b"], dtype=object), y[:2])).batch(2)
    assert spec_rows(strings) is None and spec_rows(dataset.map(lambda a, b: a)) is None
