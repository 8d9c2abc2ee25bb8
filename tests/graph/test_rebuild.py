"""Every model of the zoo rebuilds unchanged, through both doors of the graph core."""

import keras
import numpy as np
import pytest

from kstruct import _graph
from tests.graph.zoo import ZOO, raw_ops, resnet_style, sample, sequential


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo_model(request):
    model = ZOO[request.param]()
    x = sample(model)
    # Random BatchNorm statistics, so a rebuild that loses them shows in the outputs.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([np.random.default_rng(1).uniform(0.5, 2.0, size=w.shape) for w in layer.get_weights()])
    return model, x


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_rebuild_gives_identical_outputs_and_leaves_the_model_untouched(zoo_model):
    model, x = zoo_model
    before, layers = _weights(model), list(model.layers)
    new = _graph.rebuild(model)
    assert new is not model and type(new) is type(model)
    assert all(a is not b for a, b in zip(new.layers, model.layers))
    assert np.abs(np.asarray(new(x)) - np.asarray(model(x))).max() == 0.0
    assert list(model.layers) == layers
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))


def test_parse_and_build_gives_identical_outputs(zoo_model):
    model, x = zoo_model
    graph = _graph.parse(model)
    new, layers = _graph.build(graph, {}, {})
    for name, layer in layers.items():
        if _graph.is_layer(layer):
            layer.set_weights(model.get_layer(name).get_weights())
    assert np.abs(np.asarray(new(x)) - np.asarray(model(x))).max() == 0.0


def test_raw_ops_are_nodes_with_their_inputs():
    graph = _graph.parse(raw_ops())
    ops = [n for n in graph.nodes if not n.is_layer]
    inputs = [[r.layer for r in _graph.tensor_refs(n.calls[0])] for n in ops]
    assert [n.class_name for n in ops] == ["Add", "Multiply", "Add"]
    assert inputs == [["conv_a", "conv_b"], [ops[0].name], [ops[1].name, "conv_c"]]
    assert ops[1].calls[0].args[1] == 3.0


def test_mobilenet_v3_hard_swish_ops_are_read_as_nodes():
    graph = _graph.parse(ZOO["mobilenet_v3_small"](), shapes=False)
    raw = [n.class_name for n in graph.nodes if not n.is_layer]
    assert raw.count("Add") == 9 and raw.count("Multiply") == 9


def test_rebuild_removes_and_inserts_layers_in_a_functional_model():
    model = resnet_style()
    x = sample(model)
    new = _graph.rebuild(
        model, remove={"relu_a"}, insert_after={"gap": lambda: keras.layers.Dropout(0.5, name="inserted")}
    )
    assert "relu_a" not in [layer.name for layer in new.layers]
    inserted = new.get_layer("inserted")
    assert new.get_layer("out").input is inserted.output
    # By hand: the same graph without the ReLU.
    stem = model.get_layer("stem")(x)
    branch = model.get_layer("bn_a")(model.get_layer("branch_a")(stem))
    added = stem + branch
    joined = keras.ops.concatenate([added, model.get_layer("branch_b")(added)], axis=-1)
    expected = model.get_layer("out")(model.get_layer("gap")(model.get_layer("pool")(joined)))
    np.testing.assert_allclose(np.asarray(new(x)), np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_rebuild_removes_and_inserts_layers_in_a_sequential_model():
    model = sequential()
    new = _graph.rebuild(model, remove={"drop"}, insert_after={"bn": lambda: keras.layers.ReLU(name="relu")})
    assert isinstance(new, keras.Sequential)
    assert [layer.name for layer in new.layers] == ["conv", "bn", "relu", "flatten", "out"]
    assert np.array_equal(new.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0])


def test_rebuild_replaces_layers_and_copies_weights_as_asked():
    model = sequential()

    def replace(layer):
        if layer.name == "out":
            return keras.layers.Dense(5, name="out", use_bias=False)
        return _graph.fresh_copy(layer)

    def copy_weights(original, new):
        new.set_weights(original.get_weights()[: len(new.weights)])

    new = _graph.rebuild(model, replace, copy_weights)
    assert new.get_layer("out").bias is None
    np.testing.assert_array_equal(new.get_layer("out").kernel.numpy(), model.get_layer("out").kernel.numpy())


def test_replace_may_return_a_chain_of_layers_called_in_the_original_place():
    for model in (sequential(), resnet_style()):
        x = sample(model)

        def replace(layer):
            if layer.name in ("conv", "stem"):
                return [keras.layers.Identity(name=f"{layer.name}_before"), _graph.fresh_copy(layer)]
            return _graph.fresh_copy(layer)

        def copy_weights(original, new):
            for layer in new if isinstance(new, list) else [new]:
                if layer.weights:
                    layer.set_weights(original.get_weights())

        new = _graph.rebuild(model, replace, copy_weights)
        names = [layer.name for layer in new.layers]
        replaced = "conv" if "conv" in names else "stem"
        assert names[names.index(replaced) - 1] == f"{replaced}_before"
        assert len(new.layers) == len(model.layers) + 1
        assert np.abs(np.asarray(new(x)) - np.asarray(model(x))).max() == 0.0


class _FunctionalSubclass(keras.Model):
    """A functional model of a class of its own (as keras_hub's backbones are)."""

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)


def _named_models() -> list[keras.Model]:
    sequential_model = keras.Sequential([keras.Input((4,), name="pixels"), keras.layers.Dense(3, name="out")], name="seq")
    sequential_model.trainable = False
    inputs = {"a": keras.Input((2,), name="a"), "b": keras.Input((3,), name="b")}
    joined = keras.layers.Concatenate(name="join")([inputs["a"], inputs["b"]])
    functional = keras.Model(inputs, {"y": keras.layers.Dense(2, name="out")(joined)}, name="two_inputs")
    features = keras.Input((4,), name="features")
    subclass = _FunctionalSubclass(features, keras.layers.Dense(2, name="out")(features), name="subclass")
    return [sequential_model, functional, subclass]


def test_a_compiled_model_rebuilds_compiled_alike_with_its_inputs_and_no_optimizer_built_on_the_way(monkeypatch):
    """`clone_model` compiles the clone of a compiled model and builds its optimizer, which the compile
    like the source then replaces: for a plain Sequential or functional model, rebuild skips that."""
    built = []
    adam_build = keras.optimizers.Adam.build
    monkeypatch.setattr(keras.optimizers.Adam, "build", lambda self, variables: (built.append(self), adam_build(self, variables))[1])
    for model in _named_models():
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        built.clear()
        new = _graph.rebuild(model)
        assert type(new) is type(model) and new.name == model.name and new.trainable == model.trainable
        assert [t.name for t in new.inputs] == [t.name for t in model.inputs]
        assert new.compiled and new.get_compile_config() == model.get_compile_config()
        assert not new.optimizer.built
        # the subclass goes through clone_model, which builds one; Keras's own classes build none
        assert len(built) == (1 if isinstance(model, _FunctionalSubclass) else 0), model.name
