"""`kstruct.factorize.decompose` on untrained tiny models: the factorized model computes what the
original does up to the truncation its rank implies, exactly at full rank, in every kind of model."""

import keras
import numpy as np
import pytest

from kstruct import factorize
from kstruct.errors import FactorizationError


def _outputs(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x)), dtype=np.float64)


def _mlp(hidden=40) -> keras.Model:
    return keras.Sequential(
        [keras.Input((48,)), keras.layers.Dense(hidden, name="hidden"), keras.layers.Dense(3, name="out")], name="mlp"
    )


def every_kind() -> keras.Model:
    """A functional model around a nested one, with each layer kind factorization knows, a shared
    layer and an Embedding with a mask, so one full-rank rebuild checks every form at once."""
    image = keras.Input((9, 9, 1), name="image")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    inner_in = keras.Input((9, 9, 1))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="first_conv")(inner_in)  # one input channel: spatial
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="strided_conv")(y)  # Tucker-2
    inner = keras.Model(inner_in, keras.layers.Conv2D(12, 1, name="pointwise")(y), name="backbone")  # 1x1: SVD
    x = keras.layers.Reshape((25, 12), name="to_sequence")(inner(image))
    x = keras.layers.Conv1D(10, 3, padding="causal", name="temporal")(x)  # Conv1D: Tucker-2
    shared = keras.layers.Dense(16, activation="relu", name="shared")  # a Dense on 3D inputs, called twice
    x = keras.layers.GlobalAveragePooling1D(name="pool")(shared(shared(keras.layers.Dense(16, name="widen")(x))))
    t = keras.layers.Embedding(30, 16, mask_zero=True, name="embedding")(tokens)
    t = keras.layers.GlobalAveragePooling1D(name="pool_tokens")(t)  # averages the unmasked steps only
    joined = keras.layers.Concatenate(name="join")([x, t])
    return keras.Model([image, tokens], keras.layers.Dense(4, name="out")(joined), name="every_kind")


def _every_kind_inputs(rng, n=5):
    tokens = rng.integers(1, 30, size=(n, 6))
    tokens[:, 4:] = 0  # padding the mask must hide
    return [rng.normal(size=(n, 9, 9, 1)).astype("float32"), tokens]


def test_dense_truncated_svd_errs_by_at_most_the_first_dropped_singular_value(rng):
    model = _mlp()
    kernel = np.asarray(model.get_layer("hidden").kernel, dtype=np.float64)
    singular = np.linalg.svd(kernel, compute_uv=False)
    planned = factorize.plan(model, rank=0.25)
    assert set(planned.layers) == {"hidden"} and "out" in planned.skipped  # the logits are left as they are
    note = planned.layers["hidden"].note()
    assert note["rank"] == 10 and note["full_rank"] == 40 and note["form"] == "svd"  # ceil(0.25 * 40)
    assert note["params"] == [48 * 40 + 40, 10 * (48 + 40) + 40] and note["macs"] == [48 * 40, 10 * (48 + 40)]
    small = planned.apply(model)
    assert [type(layer).__name__ for layer in small.layers] == ["Dense", "Dense", "Dense"]
    factor, hidden = small.layers[:2]
    assert (factor.units, factor.use_bias, hidden.units, hidden.use_bias) == (10, False, 40, True)
    # The kernel is the best rank-10 approximation: its error is the energy of the dropped singular values,
    np.testing.assert_allclose(
        np.linalg.norm(planned.layers["hidden"].factors.approximation - kernel), np.sqrt((singular[10:] ** 2).sum()), rtol=1e-6
    )
    # and for every input the hidden layer's output moves by at most |x| times the first dropped one.
    x = rng.normal(size=(64, 48)).astype("float32")
    probe = lambda m: keras.Model(m.inputs[0], m.get_layer("hidden").output)  # noqa: E731
    error = np.linalg.norm(_outputs(probe(small), x) - _outputs(probe(model), x), axis=1)
    bound = np.linalg.norm(x, axis=1) * singular[10]
    assert np.all(error <= bound * (1 + 1e-4) + 1e-5) and error.max() > 0.1 * bound.max()


def test_energy_keeps_the_fewest_singular_values_reaching_it():
    model = _mlp()
    singular = np.linalg.svd(np.asarray(model.get_layer("hidden").kernel, dtype=np.float64), compute_uv=False)
    kept = np.cumsum(singular**2) / (singular**2).sum()
    for energy in (0.5, 0.9):
        note = factorize.plan(model, energy=energy, only_if_cheaper=False).layers["hidden"].note()
        expected = int(np.argmax(kept >= energy)) + 1
        assert note["rank"] == expected and note["energy"] >= energy > kept[expected - 2]


def test_full_rank_reproduces_every_layer_kind_in_a_nested_functional_model(rng):
    model = every_kind()
    x = _every_kind_inputs(rng)
    planned = factorize.plan(model, rank=1.0, only_if_cheaper=False, layers=lambda layer: True)
    forms = {name: p.form for name, p in planned.layers.items()}
    assert forms == {"first_conv": "spatial", "strided_conv": "tucker2", "pointwise": "svd", "temporal": "tucker2",
                     "widen": "svd", "shared": "svd", "embedding": "svd", "out": "svd"}
    full = planned.apply(model)
    np.testing.assert_allclose(_outputs(full, x), _outputs(model, x), atol=1e-4)
    backbone = full.get_layer("backbone")  # the nested model stays one, its layers replaced inside it
    assert [layer.name for layer in backbone.layers[1:]] == [
        "first_conv_vertical", "first_conv", "strided_conv_in", "strided_conv_core", "strided_conv",
        "pointwise_factor", "pointwise",
    ]
    assert backbone.get_layer("first_conv_vertical").kernel_size == (3, 1)
    assert backbone.get_layer("first_conv").activation.__name__ == "relu"
    assert type(full.get_layer("embedding")).__name__ == "Dense"  # the chain's last layer keeps the name
    assert len(full.get_layer("shared")._inbound_nodes) == len(full.get_layer("shared_factor")._inbound_nodes) == 2


def test_truncated_convolutions_compute_their_approximated_kernels_within_the_dropped_energy(rng):
    model = every_kind()
    x = _every_kind_inputs(rng)
    planned = factorize.plan(model, rank=0.5, layers=["first_conv", "strided_conv", "temporal"], only_if_cheaper=False)
    small = planned.apply(model)
    # The factorized model computes exactly the original with each kernel replaced by its approximation...
    approximated = keras.models.clone_model(model)
    approximated.set_weights(model.get_weights())
    for name, layer_plan in planned.layers.items():
        layer = approximated.get_layer("backbone").get_layer(name) if name != "temporal" else approximated.get_layer(name)
        layer.kernel.assign(layer_plan.factors.approximation.astype("float32"))
    np.testing.assert_allclose(_outputs(small, x), _outputs(approximated, x), atol=1e-4)
    assert np.abs(_outputs(small, x) - _outputs(model, x)).max() > 1e-3  # truncation did happen
    # ...and each approximation errs by no more than the energy its dropped singular values hold.
    for name, layer_plan in planned.layers.items():
        kernel = np.asarray(model.get_layer("backbone").get_layer(name).kernel if name != "temporal"
                            else model.get_layer(name).kernel, dtype=np.float64)
        error = np.linalg.norm(layer_plan.factors.approximation - kernel) ** 2
        if layer_plan.form == "tucker2":  # higher-order SVD: at most the two modes' dropped energies together
            dropped = 0.0
            for axis, r in zip((-2, -1), layer_plan.factors.rank):
                s = np.linalg.svd(np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1), compute_uv=False)
                dropped += (s[r:] ** 2).sum()
        else:
            kh, kw, c_in, c_out = kernel.shape
            s = np.linalg.svd(kernel.transpose(0, 2, 1, 3).reshape(kh * c_in, kw * c_out), compute_uv=False)
            dropped = (s[layer_plan.factors.rank:] ** 2).sum()
        assert error <= dropped * (1 + 1e-6) + 1e-9, (name, error, dropped)


def test_tucker_or_spatial_is_the_one_with_fewer_macs():
    model = every_kind()
    for name in ("first_conv", "strided_conv"):
        layer_plan = factorize.plan(model, rank=0.5, layers=name, only_if_cheaper=False).layers[name]
        layer = model.get_layer("backbone").get_layer(name)
        kh, kw, c_in, c_out = layer.kernel.shape
        p_in, p_out = 9 * 9, int(np.prod(layer.output.shape[1:3]))
        r_in, r_out, r = -(-c_in // 2), -(-c_out // 2), -(-min(kh * c_in, kw * c_out) // 2)
        tucker = p_in * c_in * r_in + p_out * kh * kw * r_in * r_out + p_out * r_out * c_out
        spatial = layer.output.shape[1] * 9 * kh * c_in * r + p_out * kw * r * c_out
        assert layer_plan.macs[1] == min(tucker, spatial)
        assert layer_plan.form == ("tucker2" if tucker <= spatial else "spatial")


def test_a_layer_the_factors_would_make_costlier_is_left_alone_and_named():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="square"), keras.layers.Dense(64, name="wide"),
                              keras.layers.Dense(2, name="out")])
    planned = factorize.plan(model, rank=0.75)
    assert set(planned.layers) == {"wide"}  # 6 x (8 + 64) < 8 x 64, but 6 x 16 > 64
    assert planned.skipped["square"] == "its factorized form costs more: 96 MACs against 64"
    assert planned.notes()["skipped"]["out"].startswith("gives a model output")
    with pytest.raises(FactorizationError, match="no layer low-rank factorization knows"):
        factorize.decompose(keras.Sequential([keras.Input((4,)), keras.layers.ReLU()]), rank=0.5)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({}, "Expected exactly one of `rank`"),
        ({"rank": 0.5, "energy": 0.9}, "Expected exactly one of `rank`"),
        ({"rank": 1.5}, r"Expected `rank` in \(0, 1\]. Received: rank=1.5"),
        ({"energy": 0}, r"Expected `energy` in \(0, 1\]. Received: energy=0"),
        ({"rank": 0.5, "layers": "nope"}, "`layers` entry 'nope' matches no factorizable layer"),
    ],
)
def test_bad_arguments_are_refused_with_what_was_received(arguments, message):
    with pytest.raises(ValueError, match=message):
        factorize.decompose(_mlp(), **arguments)


def test_the_factorized_model_trains_with_fit_saves_and_leaves_the_original_untouched(rng, tmp_path):
    model = _mlp()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    weights = [w.copy() for w in model.get_weights()]
    small = factorize.decompose(model, energy=0.8)
    assert small.compiled and small.count_params() < model.count_params()
    x, y = rng.normal(size=(64, 48)).astype("float32"), rng.integers(0, 3, size=64)
    before = [w.copy() for w in small.get_weights()]
    small.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert all(np.abs(a - b).max() > 0 for a, b in zip(before, small.get_weights()))
    small.save(tmp_path / "small.keras")
    np.testing.assert_allclose(_outputs(keras.models.load_model(tmp_path / "small.keras"), x), _outputs(small, x), atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
