"""Nested models seen through (`parse(flatten=True)`), shared layers' channel groups, and call order in `build`."""

import keras
import numpy as np

from kstruct import _graph
from kstruct._graph import Member, Ref


def _inner(name="inner", prefix="in") -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(6, 3, padding="same", name=f"{prefix}_conv")(inputs)
    x = keras.layers.BatchNormalization(name=f"{prefix}_bn")(x)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1, name=f"{prefix}_proj")(x), name=name)


def test_flatten_inlines_a_nested_model_and_rebuilds_it_flat_with_the_same_predictions():
    model = keras.Sequential([keras.Input((6, 6, 4)), _inner(), keras.layers.GlobalAveragePooling2D(name="gap"),
                              keras.layers.Dense(3, name="out")], name="outer")
    graph = _graph.parse(model, flatten=True)
    assert [n.name for n in graph.nodes] == ["in_conv", "in_bn", "in_proj", "gap", "out"]
    assert graph.flattened == ["inner"] and not graph.sequential
    assert graph.node("in_conv").calls[0].args == [Ref(graph.inputs[0][0])]
    assert graph.shapes[Ref("in_proj")] == (None, 6, 6, 4)
    flat, layers = _graph.build(graph, {}, {})
    by_name = _graph.graph.layers_by_name(model)
    for name, layer in layers.items():
        layer.set_weights(by_name[name].get_weights())
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert _graph.parse(model).node("inner").is_model  # the default parse keeps the nesting


def test_a_nested_model_stays_one_node_with_the_reason_when_it_cannot_be_opened():
    inputs = keras.Input((6, 6, 4))
    frozen = _inner()(inputs, training=False)  # the user pinned its BatchNorm to inference mode
    clash = _inner("clash", prefix="top")(keras.layers.Conv2D(4, 1, name="top_conv")(inputs))
    out = keras.layers.Add(name="add")([frozen, clash])
    graph = _graph.parse(keras.Model(inputs, out), flatten=True)
    assert graph.kept_nested == {
        "inner": "called with arguments other than tensors (e.g. training=False)",
        "clash": "its layer names repeat names outside it (top_conv)",
    }
    analysis = _graph.analyze(graph)
    (group,) = [g for g in analysis.groups() if g.producers == ["top_conv"]]
    assert group.reasons == ["clash (Functional): a nested model kstruct cannot open: its layer names repeat names "
                             "outside it (top_conv)"]


def test_a_model_called_twice_becomes_shared_layers_and_one_group_spans_both_calls():
    tower = _inner("tower", prefix="t")
    a, b = keras.Input((6, 6, 4), name="a"), keras.Input((6, 6, 4), name="b")
    x = keras.layers.Concatenate(name="cat")([tower(a), tower(b)])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    graph = _graph.parse(keras.Model([a, b], keras.layers.Dense(2, name="out")(x)), flatten=True)
    assert {n.name: len(n.calls) for n in graph.nodes} == {"t_conv": 2, "t_bn": 2, "t_proj": 2, "cat": 1, "gap": 1,
                                                           "out": 1}
    assert graph.node("t_bn").calls[1].args == [Ref("t_conv", 1, 0)]
    groups = {tuple(g.producers): g for g in _graph.analyze(graph).groups() if g.producers}
    conv = groups[("t_conv",)]
    assert not conv.frozen and conv.size == 6
    assert sorted((m.layer, m.role) for m in conv.members) == [("t_bn", "channel"), ("t_conv", "output"),
                                                               ("t_proj", "input")]
    proj = groups[("t_proj",)]
    assert not proj.frozen
    assert [m for m in proj.members if m.layer == "out"] == [Member("out", "input", -1, 0, 4),
                                                              Member("out", "input", -1, 4, 8)]


def test_shared_layer_inputs_from_different_groups_are_tied():
    inputs = keras.Input((5,))
    shared = keras.layers.Dense(3, name="shared")
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    out = keras.layers.Dense(2, name="out")(keras.layers.Add(name="add")([shared(a), shared(b)]))
    groups = {tuple(g.producers): g for g in _graph.analyze(_graph.parse(keras.Model(inputs, out))).groups()
              if g.producers}
    assert set(groups) == {("a", "b"), ("shared",), ("out",)}
    assert not groups[("a", "b")].frozen and not groups[("shared",)].frozen


def test_build_waits_for_a_shared_layers_later_input():
    """`d(x)`, then `relu`, then `d(relu)`: the config lists both calls of `d` before `relu`."""
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(4, name="d")
    x = dense(keras.layers.ReLU(name="relu")(dense(inputs)))
    model = keras.Model(inputs, x)
    graph = _graph.parse(model)
    assert [n.name for n in graph.nodes] == ["d", "relu"]
    rebuilt, layers = _graph.build(graph, {}, {})
    layers["d"].set_weights(model.get_layer("d").get_weights())
    sample = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(rebuilt.predict(sample, verbose=0), model.predict(sample, verbose=0), atol=1e-6)
