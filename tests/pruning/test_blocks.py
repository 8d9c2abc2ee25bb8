"""Block removal: residual branches found, ranked on data, and cut out with the rest of the weights kept."""

import keras
import numpy as np
import pytest

from kstruct.errors import PruningError
from kstruct.pruning import drop_blocks, removable_blocks, score_blocks


def tiny_resnet(blocks=3) -> keras.Model:
    """A stem, `blocks` residual blocks (conv-BN-relu-conv + identity), then an Add of two projections (no shortcut)."""
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    for i in range(blocks):
        y = keras.layers.Conv2D(4, 3, padding="same", name=f"b{i}_conv1")(x)
        y = keras.layers.BatchNormalization(name=f"b{i}_bn")(y)
        y = keras.layers.ReLU(name=f"b{i}_relu")(y)
        y = keras.layers.Conv2D(4, 3, padding="same", name=f"b{i}_conv2")(y)
        x = keras.layers.Add(name=f"b{i}_add")([x, y])
    down = keras.layers.Conv2D(6, 1, strides=2, name="down")(x)  # a shape change: no shortcut
    x = keras.layers.Add(name="not_identity")([down, keras.layers.Conv2D(6, 1, strides=2, name="proj")(x)])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x), name="tiny_resnet")


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 2)).astype("float32"), rng.integers(0, 3, n)


def test_removable_blocks_lists_identity_residual_branches_only():
    blocks = removable_blocks(tiny_resnet())
    assert [b.name for b in blocks] == ["b0_add", "b1_add", "b2_add"]
    assert blocks[1].layers == ["b1_conv1", "b1_bn", "b1_relu", "b1_conv2", "b1_add"]
    assert blocks[1].skip.layer == "b0_add"


def test_drop_blocks_by_name_removes_the_layers_and_keeps_the_other_weights():
    model = tiny_resnet()
    x, _ = _data()
    smaller = drop_blocks(model, names=["b1_add"])
    names = [layer.name for layer in smaller.layers]
    assert not any(name.startswith("b1_") for name in names) and "b0_add" in names and "b2_add" in names
    kept = smaller.get_layer("b2_conv1").kernel.numpy()
    np.testing.assert_array_equal(kept, model.get_layer("b2_conv1").kernel.numpy())
    # Zero the branch's last conv: the block adds nothing, so removing it changes no prediction.
    quiet = tiny_resnet()
    quiet.set_weights(model.get_weights())
    conv = quiet.get_layer("b1_conv2")
    conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    np.testing.assert_allclose(drop_blocks(quiet, names=["b1_add"]).predict(x, verbose=0),
                               quiet.predict(x, verbose=0), atol=1e-6)
    assert len(model.layers) == len(tiny_resnet().layers)  # the input model is untouched


@pytest.mark.parametrize("criterion", ["norm", "loss"])
def test_drop_blocks_removes_the_block_that_matters_least(criterion):
    model = tiny_resnet()
    # Soft labels = the model's own predictions: the loss is at its minimum, so any removal raises it.
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    for i, scale in enumerate([1.0, 0.01, 1.0]):  # block 1 barely adds anything
        conv = model.get_layer(f"b{i}_conv2")
        kernel, bias = conv.get_weights()
        conv.set_weights([kernel * scale * (3.0 if i != 1 else 1.0), bias])
    x, _ = _data()
    data = (x, model.predict(x, verbose=0))
    scores = score_blocks(model, removable_blocks(model), criterion, data=data)
    assert min(scores, key=scores.get) == "b1_add"
    smaller = drop_blocks(model, 1, criterion=criterion, data=data)
    assert [b.name for b in removable_blocks(smaller)] == ["b0_add", "b2_add"]
    assert smaller.count_params() == model.count_params() - sum(
        model.get_layer(n).count_params() for n in ("b1_conv1", "b1_bn", "b1_conv2")
    )


def test_drop_blocks_bad_input_gets_one_clear_error():
    model = tiny_resnet(blocks=2)
    with pytest.raises(PruningError, match=r"drop_blocks\(3\): model `tiny_resnet` has 2 removable "
                                           r"block\(s\) \(b0_add, b1_add\); ask for at most 2\."):
        drop_blocks(model, 3, data=_data())
    with pytest.raises(ValueError, match=r"Not removable blocks of `tiny_resnet`: \['down'\]\. Removable blocks: "
                                         r"b0_add, b1_add"):
        drop_blocks(model, names=["down"])
    with pytest.raises(ValueError, match="Pass exactly one of `n`"):
        drop_blocks(model)
    with pytest.raises(ValueError, match="Scoring blocks by 'norm' needs data"):
        drop_blocks(model, 1)


def plain_chain() -> keras.Model:
    """No residuals: a stem, two shape-preserving convs (one with BN and ReLU, one with Dropout), a widening conv, a head."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3, padding="same", name="stem"),
            layers.Conv2D(4, 3, padding="same", name="c1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.Conv2D(4, 3, padding="same", name="c2"),
            layers.Dropout(0.2, name="drop2"),
            layers.Conv2D(6, 3, padding="same", name="wider"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(3, name="out"),
        ],
        name="plain_chain",
    )


def test_shape_preserving_layers_of_a_plain_chain_are_removable_with_their_companions():
    blocks = removable_blocks(plain_chain())
    assert [(b.name, b.layers, b.skip.layer) for b in blocks] == [
        ("relu1", ["c1", "bn1", "relu1"], "stem"),
        ("drop2", ["c2", "drop2"], "relu1"),
    ]
    # Inside a residual branch, layers belong to their block and are not listed again.
    assert [b.name for b in removable_blocks(tiny_resnet())] == ["b0_add", "b1_add", "b2_add"]


def test_dropping_an_identity_conv_changes_no_prediction_and_keeps_the_other_weights():
    model = plain_chain()
    x, _ = _data()
    x = np.concatenate([x, x[..., :1]], axis=-1)  # 3 channels
    identity = np.zeros((3, 3, 4, 4), "float32")
    identity[1, 1] = np.eye(4)
    model.get_layer("c2").set_weights([identity, np.zeros(4, "float32")])
    smaller = drop_blocks(model, names=["drop2"])
    assert [layer.name for layer in smaller.layers] == ["stem", "c1", "bn1", "relu1", "wider", "gap", "out"]
    np.testing.assert_allclose(smaller.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(smaller.get_layer("wider").kernel.numpy(), model.get_layer("wider").kernel.numpy())
    # Ranked by "norm", the identity conv changes its input least: it goes first.
    assert [layer.name for layer in drop_blocks(model, 1, data=x).layers] == [layer.name for layer in smaller.layers]


def test_loss_scores_from_the_gated_probe_equal_the_loss_of_each_model_without_its_block():
    model = tiny_resnet()
    model.compile(loss="sparse_categorical_crossentropy")
    x, y = _data(24)
    scores = score_blocks(model, removable_blocks(model), "loss", data=(x, y))
    base = model.evaluate(x, y, verbose=0)
    for name, score in scores.items():
        smaller = drop_blocks(model, names=[name])
        assert score == pytest.approx(smaller.evaluate(x, y, verbose=0) - base, abs=1e-5)
    assert len(set(scores.values())) == 3  # three blocks, three distinct rises


def test_drop_blocks_step_scores_on_a_fixed_sample_bounded_by_one_epoch_and_notes_the_time():
    import kstruct
    from kstruct.engine.training import TrainingData
    from kstruct.pruning.blocks_step import scoring_rows, scoring_sample

    # All ablations (candidates + 1 passes) forward about two epochs' rows, within [32, 256] each.
    assert scoring_rows(50_000, 18) == 256 and scoring_rows(256, 18) == 32 and scoring_rows(256, 3) == 128
    assert scoring_rows(64, 3, "norm") == 256  # one pass in all
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 8, 8, 2)).astype("float32"), rng.integers(0, 3, 300)
    first, again = scoring_sample(TrainingData((x, y)), 256), scoring_sample(TrainingData((x, y)), 256)
    assert len(first[0]) == 256 and np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], x[:256])  # drawn across the data, not its first rows
    model = tiny_resnet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    result = kstruct.optimize(model, "drop_blocks(1)", train_data=(x[:96], y[:96]), validation_data=(x, y),
                              epochs=1, target="float32", verbose=0)
    scoring = result.report.stages[-1].notes["scoring"]
    # 3 batches of 32 a epoch, 3 candidates: 2 * 96 // 4 rows.
    assert scoring["samples"] == 48 and scoring["candidates"] == 3 and scoring["seconds"] > 0
