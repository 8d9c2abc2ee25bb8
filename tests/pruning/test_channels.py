"""Channel pruning: groups, masks that tighten during fit, and surgery that predicts what the masked model did."""

import keras
import numpy as np
import pytest

from kstruct.errors import PruningError
from kstruct.pruning import (
    ChannelMaskWrapper,
    PolynomialDecay,
    channel_groups,
    prune_channels,
    strip,
)
from tests.graph import zoo


def _labels(model, n, seed=0):
    return np.random.default_rng(seed).integers(0, model.outputs[0].shape[-1], n)


def _prune_fit_strip(model, ratio=0.5, n=24, *, eager=False, **options):
    """`eager` for the deep models: a few steps cost less than tracing their train function."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=eager)
    x, y = zoo.sample(model, n), _labels(model, n)
    masked = prune_channels(model, ratio, **options)
    masked.fit(x, y, epochs=1, batch_size=8, verbose=0)
    stripped = strip(masked)
    if eager:
        diff = np.max(np.abs(np.asarray(masked(x, training=False)) - np.asarray(stripped(x, training=False))))
    else:
        diff = np.max(np.abs(masked.predict(x, verbose=0) - stripped.predict(x, verbose=0)))
    return masked, stripped, diff


def _widths(model):
    return {
        layer.name: getattr(layer, "filters", None) or getattr(layer, "units", None)
        for layer in model.layers
        if hasattr(layer, "filters") or hasattr(layer, "units")
    }


def concat_net():
    """A DenseNet-style stack: each stage concatenates its input and a new conv (offsets into the join)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    for i in range(2):
        y = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"grow{i}")(y)
        x = keras.layers.Concatenate(name=f"cat{i}")([x, y])
    x = keras.layers.Conv2D(8, 1, name="transition")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="concat_net")


def separable_net():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.SeparableConv2D(12, 3, padding="same", activation="relu", name="sep")(x)
    x = keras.layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, name="sep2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(10, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="separable_net")


def frozen_net():
    """A Reshape and a LayerNormalization: the groups they touch must keep every channel."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    r = keras.layers.Reshape((8, 32), name="reshape")(a)
    r = keras.layers.GlobalAveragePooling1D(name="gap1")(r)
    b = keras.layers.Conv2D(6, 3, padding="same", name="b")(inputs)
    b = keras.layers.LayerNormalization(name="ln")(b)
    b = keras.layers.Conv2D(5, 1, name="c")(b)
    b = keras.layers.GlobalAveragePooling2D(name="gap2")(b)
    x = keras.layers.Concatenate(name="cat")([r, b])
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="frozen_net")


def test_channel_groups_lists_prunable_and_frozen_groups_with_reasons():
    groups = channel_groups(frozen_net())
    by_producers = {tuple(g.producers): g for g in groups}
    assert set(by_producers) == {("a",), ("b",), ("c",), ("out",)}
    assert not by_producers[("c",)].frozen
    assert by_producers[("a",)].reasons == ["reshape (Reshape): kstruct cannot follow channels through this layer"]
    assert by_producers[("b",)].reasons == [
        "ln (LayerNormalization): mixes the channels, a removed one would change the rest"
    ]
    assert by_producers[("out",)].reasons == ["out: a model output"]
    text = str(groups)
    assert "c  " in text and "1 prunable, 3 frozen" in text
    assert "reshape (Reshape): kstruct cannot follow channels" in text


def test_sequential_surgery_shrinks_filters_and_predicts_what_the_masked_model_did():
    model = zoo.sequential()
    before = [w.copy() for w in model.get_weights()]
    masked, stripped, diff = _prune_fit_strip(model)
    assert diff <= 1e-5
    assert _widths(stripped) == {"conv": 2, "out": 5}
    assert stripped.get_layer("out").kernel.shape == (6 * 6 * 2, 5)  # Flatten -> Dense rows follow
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "BatchNormalization", "Dropout",
                                                                    "Flatten", "Dense"]
    assert stripped.get_layer("bn").gamma.shape == (2,)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the input is untouched
    assert not any(isinstance(layer, ChannelMaskWrapper) for layer in model.layers)


def test_resnet_add_ties_the_branches_and_concatenate_keeps_offsets():
    masked, stripped, diff = _prune_fit_strip(zoo.resnet_style())
    assert diff <= 1e-5
    assert _widths(stripped) == {"stem": 4, "branch_a": 4, "branch_b": 2, "out": 3}
    assert stripped.get_layer("out").kernel.shape == (6, 3)  # 4 + 2 after the concat
    assert stripped.count_params() < zoo.resnet_style().count_params() / 2


def test_densenet_style_concatenations_are_cut_at_their_offsets():
    masked, stripped, diff = _prune_fit_strip(concat_net())
    assert diff <= 1e-5
    assert _widths(stripped) == {"stem": 3, "grow0": 2, "grow1": 2, "transition": 4, "out": 3}
    assert stripped.get_layer("bn1").gamma.shape == (5,)
    assert stripped.get_layer("transition").kernel.shape == (1, 1, 7, 4)


def test_depthwise_and_separable_stacks_follow_the_multiplier():
    masked, stripped, diff = _prune_fit_strip(separable_net())
    assert diff <= 1e-5
    assert _widths(stripped) == {"stem": 4, "sep": 6, "sep2": 3, "hidden": 5, "out": 3}
    assert stripped.get_layer("dw").kernel.shape == (3, 3, 4, 2)
    assert stripped.get_layer("sep").pointwise_kernel.shape == (1, 1, 8, 6)
    assert stripped.get_layer("hidden").kernel.shape == (8 * 8 * 3, 5)


def test_frozen_groups_keep_every_channel_and_the_rest_shrinks():
    masked, stripped, diff = _prune_fit_strip(frozen_net())
    assert diff <= 1e-5
    assert _widths(stripped) == {"a": 4, "b": 6, "c": 3, "out": 3}


def test_round_to_keeps_multiples_and_layers_selects_groups():
    model = zoo.resnet_style()
    masked, stripped, diff = _prune_fit_strip(model, 0.6, round_to=4, layers="branch_b")
    assert diff <= 1e-5
    assert _widths(stripped) == {"stem": 8, "branch_a": 8, "branch_b": 4, "out": 3}


def test_masks_tighten_gradually_with_a_polynomial_schedule():
    model = zoo.sequential()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = zoo.sample(model, 16), _labels(model, 16)
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=4, frequency=2, power=1.0)
    masked = prune_channels(model, 0.75, schedule=schedule)
    wrapper = masked.get_layer("channels_out")
    kept = []
    for _ in range(3):
        masked.fit(x, y, epochs=1, batch_size=8, verbose=0)  # two steps
        kept.append(int(np.sum(keras.ops.convert_to_numpy(wrapper.mask)) // 36))
    assert kept == [4, 2, 1]


@pytest.mark.parametrize("criterion", ["l2", "bn"])
def test_each_criterion_removes_the_channels_it_scores_lowest(criterion):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    conv = np.ones((1, 1, 2, 4), "float32") * np.array([1.0, 0.1, 2.0, 0.2], "float32")
    model.get_layer("conv").set_weights([conv])
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    model.get_layer("bn").set_weights([np.array([0.5, 0.9, 0.4, 0.8], "float32"), beta, mean, var])
    model.get_layer("out").set_weights([np.ones((4, 2), "float32") * 0.5, np.zeros(2, "float32")])
    x, y = zoo.sample(model, 8), _labels(model, 8)
    masked = prune_channels(model, 0.5, criterion=criterion, data=(x, y))
    ranks = keras.ops.convert_to_numpy(masked.get_layer("channels_out").channel_rank)
    # l2 sums squares over conv, bn and out: the conv scales dominate; bn reads |gamma| alone.
    expected = {"l2": {0, 2}, "bn": {1, 3}}[criterion]
    assert set(np.flatnonzero(ranks < 2).tolist()) == expected
    masked.fit(x, y, epochs=1, batch_size=8, verbose=0)
    stripped = strip(masked)
    assert stripped.get_layer("conv").filters == 2
    np.testing.assert_array_equal(stripped.get_layer("conv").kernel.numpy()[0, 0, 0], conv[0, 0, 0, sorted(expected)])


def test_taylor_scores_follow_the_gradient():
    """A channel the loss does not depend on (zero readout weight) scores zero under taylor, not under l2."""
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.get_layer("hidden").set_weights([np.ones((4, 3), "float32") * [5.0, 1.0, 0.5], np.zeros(3, "float32")])
    model.get_layer("out").set_weights([np.array([[0, 0], [1, -1], [-1, 1]], "float32"), np.zeros(2, "float32")])
    x, y = np.random.default_rng(0).normal(size=(16, 4)).astype("float32"), np.arange(16) % 2
    l2 = prune_channels(model, 0.34, criterion="l2")
    taylor = prune_channels(model, 0.34, criterion="taylor", data=(x, y))
    assert int(keras.ops.convert_to_numpy(l2.get_layer("channels_out").channel_rank)[0]) == 0
    assert int(keras.ops.convert_to_numpy(taylor.get_layer("channels_out").channel_rank)[0]) == 2


@pytest.mark.slow
def test_mobilenet_v2_prunes_strips_and_shrinks():
    model = zoo.mobilenet_v2()
    masked, stripped, diff = _prune_fit_strip(model, n=8, eager=True)
    assert diff <= 1e-5
    assert stripped.count_params() < 0.4 * model.count_params()
    assert stripped.get_layer("Conv_1").filters == 640
    assert stripped.get_layer("predictions").units == 10


def test_stripped_and_masked_models_save_and_load(tmp_path):
    model = zoo.resnet_style()
    masked, stripped, _ = _prune_fit_strip(model)
    x = zoo.sample(model, 4, seed=1)
    stripped.save(tmp_path / "stripped.keras")
    loaded = keras.saving.load_model(tmp_path / "stripped.keras")
    assert loaded.get_layer("stem").get_config() == stripped.get_layer("stem").get_config()
    assert loaded.get_layer("stem").filters == 4
    np.testing.assert_allclose(loaded.predict(x, verbose=0), stripped.predict(x, verbose=0), atol=1e-6)

    masked.save(tmp_path / "masked.keras")
    resumed = keras.saving.load_model(tmp_path / "masked.keras")
    wrapper = resumed.get_layer("channels_out")
    assert int(keras.ops.convert_to_numpy(wrapper.pruning_step)) == 3
    np.testing.assert_allclose(resumed.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-6)
    resumed.fit(x, _labels(model, 4), epochs=1, verbose=0)  # training resumes
    assert int(keras.ops.convert_to_numpy(wrapper.pruning_step)) == 4
    assert _widths(strip(resumed)) == _widths(stripped)


def test_bad_input_gets_one_clear_error():
    with pytest.raises(ValueError, match=r"Expected `ratio` \(the fraction of channels to remove\) in \[0, 1\)\. "
                                         r"Received: ratio=1.0"):
        prune_channels(zoo.sequential(), 1.0)
    with pytest.raises(ValueError, match=r"Expected `criterion` to be one of \('l2', 'bn', 'taylor'\)"):
        prune_channels(zoo.sequential(), 0.5, criterion="l1")
    with pytest.raises(ValueError, match="criterion='taylor' needs gradients: pass data="):
        prune_channels(zoo.sequential(), 0.5, criterion="taylor")
    only_output = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")], name="one_layer")
    with pytest.raises(PruningError, match=r"model `one_layer` has no channel group to prune\. "
                                           r"Frozen groups: out: out: a model output"):
        prune_channels(only_output, 0.5)


def test_no_group_to_prune_names_the_layers_whose_channels_it_cannot_follow():
    """Grouped convolutions make no group of their own: the refusal named only the output before."""
    inputs = keras.Input((8, 8, 4))
    hidden = keras.layers.Conv2D(8, 3, groups=2, name="g1")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, groups=4, name="g2")(hidden))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden), name="grouped")
    with pytest.raises(PruningError) as error:
        prune_channels(model, 0.5)
    assert str(error.value) == (
        "kstruct.pruning.prune_channels: model `grouped` has no channel group to prune. Frozen groups: out: out: a "
        "model output. Layers whose channels it cannot follow: g1 (Conv2D: grouped convolution (groups=2)), g2 "
        "(Conv2D: grouped convolution (groups=4)). Prune a model with Conv/Dense layers whose outputs are not model "
        "outputs."
    )


def test_strip_before_training_warns_and_removes_nothing():
    model = zoo.sequential()
    masked = prune_channels(model, 0.5)
    with pytest.warns(UserWarning, match="channel masks never updated for out"):
        stripped = strip(masked)
    assert _widths(stripped) == {"conv": 4, "out": 5}




@pytest.mark.parametrize("build", [zoo.raw_ops, zoo.two_inputs], ids=["raw_ops", "two_inputs"])
def test_raw_op_merges_and_two_input_models_strip_exactly(build):
    masked, stripped, diff = _prune_fit_strip(build())
    assert diff <= 1e-5
    assert stripped.count_params() < build().count_params()


@keras.saving.register_keras_serializable(package="kstruct_tests")
class Doubler(keras.layers.Layer):
    """A custom layer: the channel analysis cannot know what it does to channels."""

    def call(self, inputs):
        return inputs * 2.0


def test_a_custom_layer_freezes_the_groups_it_touches_and_strip_leaves_them_whole():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    x = Doubler(name="custom")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="custom_net")
    (frozen,) = [g for g in channel_groups(model) if g.producers == ["a"]]
    assert frozen.reasons == ["custom (Doubler): kstruct cannot follow channels through this layer"]
    masked, stripped, diff = _prune_fit_strip(model)
    assert diff <= 1e-5
    assert _widths(stripped) == {"a": 4, "b": 3, "out": 3}
    assert type(stripped.get_layer("custom")) is Doubler
