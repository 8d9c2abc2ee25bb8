"""Structure steps on the models users build around others: a backbone inside a Sequential
(transfer learning) and a siamese tower called on two inputs, through `kstruct.optimize`."""

import keras
import numpy as np
import pytest
import tflite_export
from ai_edge_litert.interpreter import Interpreter

import kstruct


def backbone() -> keras.Model:
    """A tiny functional backbone: a stem, one residual block, a widening conv."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="bb_stem")(inputs)
    x = keras.layers.BatchNormalization(name="bb_stem_bn")(x)
    x = keras.layers.ReLU(name="bb_stem_relu")(x)
    y = keras.layers.Conv2D(16, 3, padding="same", name="bb_conv1")(x)
    y = keras.layers.BatchNormalization(name="bb_bn1")(y)
    y = keras.layers.ReLU(name="bb_relu1")(y)
    y = keras.layers.Conv2D(16, 3, padding="same", name="bb_conv2")(y)
    x = keras.layers.Add(name="bb_add")([x, y])
    x = keras.layers.Conv2D(32, 1, activation="relu", name="bb_top")(x)
    return keras.Model(inputs, x, name="backbone")


def transfer_model() -> keras.Model:
    """The transfer-learning pattern: Sequential([Input, backbone, pooling, classifier])."""
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), backbone(), keras.layers.GlobalAveragePooling2D(name="gap"),
         keras.layers.Dense(10, activation="softmax", name="classifier")],
        name="transfer",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def siamese_model() -> keras.Model:
    """One Conv tower (a nested model) called on two images, features concatenated, a Dense head."""
    tower_in = keras.Input((8, 8, 3))
    t = keras.layers.Conv2D(16, 3, activation="relu", name="tower_conv")(tower_in)
    t = keras.layers.GlobalAveragePooling2D(name="tower_gap")(t)
    tower = keras.Model(tower_in, t, name="tower")
    left, right = keras.Input((8, 8, 3), name="left"), keras.Input((8, 8, 3), name="right")
    x = keras.layers.Concatenate(name="features")([tower(left), tower(right)])
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    model = keras.Model([left, right], keras.layers.Dense(1, activation="sigmoid", name="same")(x), name="siamese")
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.normal(size=(48, 8, 8, 3)).astype("float32"), rng.integers(0, 10, 48)


def _walk(model):
    for layer in model.layers:
        yield from _walk(layer) if isinstance(layer, keras.Model) else [layer]


def _filters(blob: bytes) -> list[int]:
    """Output channels of each 4-D CONV weight tensor read back from a TFLite file (3x3 or 1x1 kernels)."""
    interpreter = Interpreter(model_content=blob)
    return sorted(
        int(d["shape"][0]) for d in interpreter.get_tensor_details()
        if len(d["shape"]) == 4 and d["shape"][1] in (1, 3) and d["shape"][2] in (1, 3)
    )


def test_prune_channels_prunes_inside_a_nested_backbone_and_says_it_flattened(images):
    x, y = images
    model = transfer_model()
    result = kstruct.optimize(model, "prune_channels(0.5)", train_data=(x, y), epochs=1, target="float32", verbose=0)
    original, pruned = result.report.stages
    # Every group lives in the backbone: the stem's (tied to the residual branch by the Add), bb_conv1's
    # and bb_top's (read by the classifier). The classifier makes the model output and keeps its 10 units.
    assert pruned.notes["widths"] == {"bb_stem": "16->8", "bb_conv1": "16->8", "bb_conv2": "16->8", "bb_top": "32->16"}
    assert pruned.notes["flattened"] == ["backbone"]
    assert pruned.params <= 0.6 * original.params
    assert result.model.get_layer("bb_top").filters == 16
    assert not any(isinstance(layer, keras.Model) for layer in result.model.layers)
    assert model.get_layer("backbone").get_layer("bb_top").filters == 32  # the user's model is untouched
    assert _filters(result.tflite) == [8, 8, 8, 16]
    np.testing.assert_allclose(tflite_export.predict(result.tflite, x[:8]), result.model.predict(x[:8], verbose=0),
                               atol=1e-5)


def test_drop_blocks_finds_the_residual_block_inside_a_nested_backbone(images):
    x, y = images
    result = kstruct.optimize(transfer_model(), "drop_blocks(1)", train_data=(x, y), epochs=1, target="float32",
                              verbose=0)
    _, dropped = result.report.stages
    # The residual block, and bb_conv2 alone is not a candidate (it sits inside the residual branch).
    assert set(dropped.notes["scores"]) == {"bb_add"}
    assert dropped.notes["dropped"] == ["bb_add"] and dropped.notes["flattened"] == ["backbone"]
    names = {layer.name for layer in result.model.layers}
    assert {"bb_conv1", "bb_bn1", "bb_relu1", "bb_conv2", "bb_add"}.isdisjoint(names) and "bb_top" in names
    assert result.model.predict(x[:4], verbose=0).shape == (4, 10)


def test_siamese_tower_filters_halve_when_both_calls_keep_the_same_channels(images):
    x, _ = images
    rng = np.random.default_rng(1)
    left, right, same = x, x[rng.permutation(len(x))], rng.integers(0, 2, len(x))
    model = siamese_model()
    result = kstruct.optimize(model, "prune_channels(0.5)", train_data=([left, right], same), epochs=1,
                              target="float32", verbose=0)
    pruned = result.report.stages[-1]
    assert pruned.notes["widths"] == {"tower_conv": "16->8", "hidden": "8->4"}
    shared = result.model.get_layer("tower_conv")
    assert shared.filters == 8 and len(shared._inbound_nodes) == 2  # still one layer, called on both images
    assert result.model.get_layer("hidden").kernel.shape == (16, 4)  # 8 features from each call
    assert model.get_layer("tower").get_layer("tower_conv").filters == 16
    keras_out = result.model.predict([left[:6], right[:6]], verbose=0)
    np.testing.assert_allclose(tflite_export.predict(result.tflite, [left[:6], right[:6]]), keras_out, atol=1e-5)


def test_the_transfer_pattern_on_mobilenet_v2_keeps_at_most_0_6_of_its_parameters():
    """The issue's pattern: Sequential([Input, MobileNetV2(alpha=0.35, include_top=False), GAP, Dense(10)])."""
    backbone_v2 = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                                                 weights=None)
    model = keras.Sequential([keras.Input((32, 32, 3)), backbone_v2, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10)])
    groups = kstruct.pruning.channel_groups(model)
    assert len(groups.prunable) == 25  # before: none ("Frozen groups: dense: a model output")
    blocks = [b.name for b in kstruct.pruning.removable_blocks(model)]  # before: none
    assert [b for b in blocks if b.endswith("_add")] == [f"block_{i}_add" for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)]
    masked = kstruct.pruning.prune_channels(model, 0.5)
    wrappers = [layer for layer in _walk(masked) if isinstance(layer, kstruct.pruning.ChannelMaskWrapper)]
    assert wrappers and all(w.name.startswith("channels_") for w in wrappers)
    for wrapper in wrappers:
        wrapper.mask_now(0.5)  # the final masks at once, as the step's `structure` does before training
    smaller = kstruct.pruning.strip(masked)
    assert smaller.count_params() <= 0.6 * model.count_params()
    sample = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    assert smaller.predict(sample, verbose=0).shape == (2, 10)
