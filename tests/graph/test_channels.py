"""Coupled channel groups on small hand-built models, written out member by member."""

import keras

from kstruct import _graph
from kstruct._graph import Member


def _analysis(model):
    return _graph.analyze(_graph.parse(model))


def _by_producers(analysis):
    return {tuple(g.producers): g for g in analysis.groups() if g.producers}


def test_add_ties_the_branches_and_per_channel_layers_follow():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(a)
    x = keras.layers.ReLU(name="relu")(x)
    b = keras.layers.Conv2D(6, 1, name="b")(x)
    c = keras.layers.Conv2D(6, 1, name="c")(inputs)
    x = keras.layers.Add(name="add")([b, c])
    x = keras.layers.Conv2D(5, 1, name="d")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(2, name="out")(x)
    groups = _by_producers(_analysis(keras.Model(inputs, out)))

    assert set(groups) == {("a",), ("b", "c"), ("d",), ("out",)}
    assert groups[("a",)].size == 4 and not groups[("a",)].frozen
    assert groups[("a",)].members == [
        Member("a", "output", -1, 0, 4), Member("bn", "channel", -1, 0, 4), Member("b", "input", -1, 0, 4)
    ]
    assert groups[("b", "c")].size == 6 and not groups[("b", "c")].frozen
    assert sorted(groups[("b", "c")].members, key=lambda m: m.layer) == [
        Member("b", "output", -1, 0, 6), Member("c", "output", -1, 0, 6), Member("d", "input", -1, 0, 6)
    ]
    assert groups[("d",)].members == [Member("d", "output", -1, 0, 5), Member("out", "input", -1, 0, 5)]
    assert groups[("out",)].frozen and groups[("out",)].reasons == ["out: a model output"]


def test_every_merge_layer_ties_its_inputs():
    inputs = keras.Input((6, 6, 2))
    convs = [keras.layers.Conv2D(3, 1, name=f"c{i}")(inputs) for i in range(7)]
    merged = [
        keras.layers.Subtract(name="sub")([convs[0], convs[1]]),
        keras.layers.Multiply(name="mul")([convs[2], convs[3]]),
        keras.layers.Average(name="avg")([convs[4], convs[5]]),
    ]
    x = keras.layers.Maximum(name="max")(merged)
    x = keras.layers.Minimum(name="min")([x, convs[6]])
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(2, 1, name="head")(x)
    analysis = _analysis(keras.Model(inputs, keras.layers.GlobalMaxPooling2D(name="gmp")(x)))
    (tied,) = [g for g in analysis.groups() if "c0" in g.producers]
    assert sorted(tied.producers) == [f"c{i}" for i in range(7)]
    assert not tied.frozen
    assert Member("ln", "channel", -1, 0, 3) in tied.members and Member("head", "input", -1, 0, 3) in tied.members
    assert analysis.group_of("head").frozen  # through the pooling to the output


def test_concatenate_gives_each_group_its_offset():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    b = keras.layers.Conv2D(6, 1, name="b")(inputs)
    x = keras.layers.Concatenate(name="concat")([a, b])
    x = keras.layers.Conv2D(2, 1, name="c")(x)
    groups = _by_producers(_analysis(keras.Model(inputs, x)))
    assert groups[("a",)].members == [Member("a", "output", -1, 0, 4), Member("c", "input", -1, 0, 4)]
    assert groups[("b",)].members == [Member("b", "output", -1, 0, 6), Member("c", "input", -1, 4, 10)]


def test_flatten_then_dense_reads_each_channel_once_per_position():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 1, name="a")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(2, name="out")(x)
    groups = _by_producers(_analysis(keras.Model(inputs, x)))
    assert groups[("a",)].members == [
        Member("a", "output", -1, 0, 3), Member("out", "input", -1, 0, 3, multiplier=1, repeats=16, stride=3)
    ]
    assert not groups[("a",)].frozen


def test_depthwise_and_separable_convolutions_follow_their_input():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(3, 1, name="a")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(a)
    x = keras.layers.Conv2D(4, 1, name="b")(x)
    x = keras.layers.SeparableConv2D(5, 3, padding="same", name="sep")(x)
    x = keras.layers.Conv2D(2, 1, name="c")(x)
    groups = _by_producers(_analysis(keras.Model(inputs, x)))
    # Depthwise channel c becomes outputs 2c and 2c+1: b reads 6 positions, two per channel of `a`.
    assert groups[("a",)].members == [
        Member("a", "output", -1, 0, 3), Member("dw", "channel", -1, 0, 3), Member("b", "input", -1, 0, 6, multiplier=2)
    ]
    assert groups[("b",)].members == [Member("b", "output", -1, 0, 4), Member("sep", "input", -1, 0, 4)]
    assert groups[("sep",)].members == [Member("sep", "output", -1, 0, 5), Member("c", "input", -1, 0, 5)]


def test_elementwise_raw_ops_tie_and_pass_channels():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    x = keras.ops.add(a, b) * 3.0
    x = keras.layers.Conv2D(2, 1, name="c")(keras.ops.relu(x))
    analysis = _analysis(keras.Model(inputs, x))
    groups = _by_producers(analysis)
    assert ("a", "b") in groups and not groups[("a", "b")].frozen
    assert Member("c", "input", -1, 0, 4) in groups[("a", "b")].members


def test_nodes_it_cannot_follow_freeze_their_groups_with_the_reason():
    inputs = keras.Input((4, 4, 2))
    a = keras.layers.Conv2D(3, 1, name="a")(inputs)
    r = keras.layers.Reshape((16, 3), name="reshape")(a)
    b = keras.layers.Conv2D(3, 1, name="b")(inputs)
    t = keras.ops.transpose(b, (0, 2, 1, 3))
    shared = keras.layers.Dense(3, name="shared")
    c = keras.layers.Conv2D(3, 1, name="c")(inputs)
    d = keras.layers.Concatenate(name="cat")([keras.layers.Conv2D(k, 1, name=f"d{k}")(inputs) for k in (1, 2)])
    s1, s2 = shared(c), shared(d)  # one kernel reads a group of 3 and groups of 1 and 2: they cannot be tied
    merged = keras.layers.Concatenate(axis=1, name="concat")([keras.layers.Flatten()(t), keras.layers.Flatten()(s1 + s2)])
    model = keras.Model(inputs, [r, merged])
    analysis = _analysis(model)
    groups = _by_producers(analysis)
    assert groups[("a",)].frozen and groups[("a",)].reasons == [
        "reshape (Reshape): kstruct cannot follow channels through this layer"
    ]
    (transpose,) = [n.name for n in analysis.graph.nodes if n.class_name == "Transpose"]
    assert groups[("b",)].reasons == [f"{transpose} (Transpose): a raw op that is not elementwise"]
    why = "shared (Dense): a shared layer, called 2 times on channels that do not line up"
    assert groups[("c",)].reasons == groups[("d1",)].reasons == groups[("d2",)].reasons == [why]
    assert analysis.prunable() == []


def test_the_model_outputs_are_never_in_a_prunable_group():
    inputs = keras.Input((6,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    out = keras.layers.Add(name="add")([a, b])
    analysis = _analysis(keras.Model(inputs, [out, keras.layers.Dense(1, name="head")(hidden)]))
    groups = _by_producers(analysis)
    assert groups[("a", "b")].frozen and groups[("a", "b")].reasons == ["add: a model output"]
    assert [g.producers for g in analysis.prunable()] == [["hidden"]]


def test_nested_models_are_frozen_at_their_boundary():
    inner_in = keras.Input((5,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="inner_dense")(inner_in), name="inner")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, name="a")(inputs)
    x = keras.layers.Dense(2, name="out")(inner(x))
    groups = _by_producers(_analysis(keras.Model(inputs, x)))
    assert groups[("a",)].reasons == ["inner (Functional): a nested model (analyze it on its own)"]
