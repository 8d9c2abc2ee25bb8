"""`kstruct.clustering`: cluster, train with fit, strip; values counted on the stripped Keras kernels."""

import keras
import numpy as np
import pytest

from kstruct import clustering
from tests.conftest import compiled


def small_model(name="small"):
    return compiled(
        keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
                keras.layers.Flatten(name="flatten"),
                keras.layers.Dense(16, activation="relu", name="hidden"),
                keras.layers.Dense(10, activation="softmax", name="out"),
            ],
            name=name,
        )
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((64, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 64)


def _distinct(values, axis=None):
    if axis is None:
        return np.unique(values).size
    moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    return max(np.unique(row).size for row in moved)


def test_stripped_kernels_hold_at_most_n_clusters_values_and_predict_as_trained(data):
    x, y = data
    clustered = clustering.cluster(small_model(), 8)
    clustered.fit(x, y, epochs=2, batch_size=16, verbose=0)
    stripped = clustering.strip(clustered)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "Flatten", "Dense", "Dense"]
    counts = {name: _distinct(stripped.get_layer(name).kernel.numpy()) for name in ("conv", "hidden", "out")}
    # At most 8: a centroid that loses all its weights in training is one value fewer.
    assert all(4 <= n <= 8 for n in counts.values()), counts
    assert clustering.distinct_values(stripped) == counts
    np.testing.assert_allclose(stripped.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-6)


def test_fit_trains_the_centroids_and_leaves_the_input_model_untouched(data):
    x, y = data
    model = small_model()
    before = [w.copy() for w in model.get_weights()]
    clustered = clustering.cluster(model, 4)
    wrapper = clustered.get_layer("clustered_hidden")
    start = wrapper.centroids_of("kernel").copy()
    clustered.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert not np.allclose(wrapper.centroids_of("kernel"), start)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert all(not isinstance(layer, clustering.ClusterWrapper) for layer in model.layers)


def test_per_channel_holds_n_values_in_each_output_channel(data):
    x, y = data
    # entropy_weight 0: the nearest centroid, which keeps every value of these small channels in use.
    clustered = clustering.cluster(small_model(), 3, per_channel=True, entropy_weight=0)
    clustered.fit(x, y, epochs=1, batch_size=16, verbose=0)
    stripped = clustering.strip(clustered)
    kernel = stripped.get_layer("conv").kernel.numpy()
    assert _distinct(kernel, axis=-1) == 3
    assert _distinct(kernel) > 3  # the channels have values of their own
    assert clustering.distinct_values(stripped, per_channel=True)["hidden"] == 3


def test_each_init_places_the_centroids_as_documented():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(64, 32)).astype("float32")
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="d")])
    model.get_layer("d").set_weights([kernel, np.zeros(32, "float32")])
    centroids, errors = {}, {}
    for init in clustering.INITS:
        wrapper = clustering.cluster(model, 8, init=init).get_layer("clustered_d")
        centroids[init] = np.sort(wrapper.centroids_of("kernel"))
        errors[init] = float(np.mean((wrapper.clustered_weights()["kernel"].numpy() - kernel) ** 2))
    np.testing.assert_allclose(centroids["linear"], np.linspace(kernel.min(), kernel.max(), 8), rtol=1e-5)
    np.testing.assert_allclose(centroids["density"], np.quantile(kernel, (np.arange(8) + 0.5) / 8), rtol=1e-4)
    assert kernel.min() <= centroids["random"].min() and centroids["random"].max() <= kernel.max()
    assert not np.allclose(centroids["random"], centroids["linear"])
    # k-means minimizes the squared error; evenly spaced centroids waste clusters on the tails.
    assert errors["kmeans++"] < errors["density"] < errors["linear"]


def _assignment_bits(assignments: np.ndarray) -> float:
    share = np.unique(assignments, return_counts=True)[1] / assignments.size
    return float(-(share * np.log2(share)).sum())


def test_entropy_weight_trades_a_little_error_for_fewer_bits_per_weight():
    """Entropy-constrained k-means: busy centroids are cheaper to join, so the assignments compress better."""
    rng = np.random.default_rng(3)
    kernel = rng.laplace(scale=0.05, size=(256, 64)).astype("float32")  # trained kernels are peaked like this
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(64, name="d")])
    model.get_layer("d").set_weights([kernel, np.zeros(64, "float32")])
    bits, errors = {}, {}
    for weight in (0.0, clustering.DEFAULT_ENTROPY_WEIGHT, 0.05):
        wrapper = clustering.cluster(model, 16, entropy_weight=weight).get_layer("clustered_d")
        centroids, assignments = wrapper.centroids_of("kernel"), wrapper.assignments_of("kernel")
        bits[weight] = _assignment_bits(assignments)
        errors[weight] = float(np.mean((centroids[assignments] - kernel) ** 2))
        if weight == 0.0:  # plain k-means: every weight at its nearest centroid
            nearest = np.abs(kernel[..., None] - centroids).argmin(axis=-1)
            np.testing.assert_array_equal(assignments, nearest)
    assert bits[0.0] > bits[clustering.DEFAULT_ENTROPY_WEIGHT] > bits[0.05]
    assert bits[0.0] - bits[clustering.DEFAULT_ENTROPY_WEIGHT] > 0.1
    assert errors[0.0] < errors[clustering.DEFAULT_ENTROPY_WEIGHT] < 2 * errors[0.0]


def test_a_large_kernel_is_fitted_on_a_sample_within_5_percent_of_the_full_fit():
    from kstruct.clustering import centroids

    values = np.random.default_rng(4).laplace(scale=0.05, size=4 * centroids.FIT_SAMPLE)

    def squared_error(fitted):
        return float(np.min((values[:, None] - fitted[None, :]) ** 2, axis=1).mean())

    sampled, _ = centroids.initial_centroids(values, 16, "kmeans++", np.random.default_rng(0), 0.0)
    full, _ = centroids.entropy_constrained(values, np.sort(sampled.astype("float64")), 0.0, centroids.LLOYD_ITERATIONS)
    assert squared_error(sampled) < 1.05 * squared_error(full)  # centroids train on afterwards anyway


@pytest.mark.parametrize("weight", [-0.1, float("nan")])
def test_a_negative_entropy_weight_is_refused(weight):
    with pytest.raises(ValueError, match="Expected `entropy_weight` >= 0"):
        clustering.cluster(small_model(), 8, entropy_weight=weight)


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match=r"Expected `init` to be one of \('kmeans\+\+', 'linear', 'density', 'random'\)"):
        clustering.cluster(small_model(), 8, init="kmeans")


def _pruned_model():
    model = small_model()
    for name in ("conv", "hidden"):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.5)] = 0.0
        layer.set_weights([kernel, bias])
    return model


@pytest.mark.parametrize("per_channel", [False, True])
def test_pruned_zeros_stay_exactly_zero_and_count_as_one_of_the_values(data, per_channel):
    x, y = data
    model = _pruned_model()
    zeros = {name: model.get_layer(name).kernel.numpy() == 0 for name in ("conv", "hidden")}
    clustered = clustering.cluster(model, 4, per_channel=per_channel)
    clustered.fit(x, y, epochs=2, batch_size=16, verbose=0)
    stripped = clustering.strip(clustered)
    for name, was_zero in zeros.items():
        kernel = stripped.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(kernel == 0, was_zero)
        assert _distinct(kernel, -1 if per_channel else None) <= 4


def test_without_preserve_sparsity_the_zeros_join_the_clusters(data):
    model = _pruned_model()
    was_zero = model.get_layer("hidden").kernel.numpy() == 0
    # Linear centroids: none sits at 0 (k-means could put one on the zeros).
    stripped = clustering.strip(clustering.cluster(model, 4, init="linear", preserve_sparsity=False))
    kernel = stripped.get_layer("hidden").kernel.numpy()
    assert np.count_nonzero(kernel[was_zero]) > 0


def test_saved_clustered_model_reloads_with_its_centroids_and_assignments_and_trains_on(data, tmp_path):
    x, y = data
    clustered = clustering.cluster(small_model(), 4, per_channel=True)
    clustered.fit(x, y, epochs=1, batch_size=16, verbose=0)
    clustered.save(tmp_path / "c.keras")
    loaded = keras.models.load_model(tmp_path / "c.keras")
    for name in ("clustered_conv", "clustered_hidden", "clustered_out"):
        old, new = clustered.get_layer(name), loaded.get_layer(name)
        np.testing.assert_array_equal(old.centroids_of("kernel"), new.centroids_of("kernel"))
        np.testing.assert_array_equal(old.assignments_of("kernel"), new.assignments_of("kernel"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-6)
    before = loaded.get_layer("clustered_hidden").centroids_of("kernel").copy()
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.allclose(loaded.get_layer("clustered_hidden").centroids_of("kernel"), before)
    assert clustering.distinct_values(clustering.strip(loaded), per_channel=True)["hidden"] <= 4


@pytest.mark.parametrize("n_clusters", [1, 0, 2.5, True])
def test_n_clusters_below_two_is_refused(n_clusters):
    with pytest.raises(ValueError, match=rf"Expected `n_clusters` to be an integer >= 2. Received: n_clusters={n_clusters!r}"):
        clustering.cluster(small_model(), n_clusters)


def test_a_layers_entry_that_matches_nothing_is_refused_with_the_candidates():
    with pytest.raises(ValueError) as raised:
        clustering.cluster(small_model(), 4, layers=["hidden", "dens.*"])
    assert str(raised.value) == "`layers` entry 'dens.*' matches no clusterable layer. Clusterable layers: conv, hidden, out"


def test_a_layer_with_fewer_weights_than_clusters_is_skipped_with_a_warning_naming_it():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="tiny"), keras.layers.Dense(40, name="big")])
    with pytest.warns(UserWarning, match=r"not clustered, fewer weights than n_clusters=16: tiny \(kernel: 6 weights in all\)"):
        clustered = clustering.cluster(model, 16)
    assert [type(layer).__name__ for layer in clustered.layers] == ["Dense", "ClusterWrapper"]


def test_depthwise_is_clustered_only_when_named():
    model = keras.Sequential(
        [keras.Input((8, 8, 4)), keras.layers.DepthwiseConv2D(3, name="dw"), keras.layers.Conv2D(4, 1, name="pw")]
    )
    default = clustering.cluster(model, 4)
    assert [type(layer).__name__ for layer in default.layers] == ["DepthwiseConv2D", "ClusterWrapper"]
    named = clustering.strip(clustering.cluster(model, 4, layers=["dw", "pw"]))
    assert clustering.distinct_values(named) == {"dw": 4, "pw": 4}


@pytest.mark.slow
def test_every_covered_layer_type_strips_to_n_values():
    images = keras.Input((6, 6, 3))
    h = keras.layers.Conv2DTranspose(4, 3, name="conv2d_t")(images)
    h = keras.layers.SeparableConv2D(8, 3, name="separable")(h)
    h = keras.layers.Reshape((36, 8))(h)
    h = keras.layers.Conv1D(8, 3, name="conv1d")(h)
    h = keras.layers.Conv1DTranspose(8, 3, name="conv1d_t")(h)
    h = keras.layers.GRU(8, return_sequences=True, name="gru")(h)
    h = keras.layers.LSTM(8, name="lstm")(h)
    volume = keras.Input((4, 4, 4, 2))
    v = keras.layers.Conv3D(4, 2, name="conv3d")(volume)
    v = keras.layers.Conv3DTranspose(4, 2, name="conv3d_t")(v)
    v = keras.layers.Flatten()(v)
    tokens = keras.Input((5,), dtype="int32")
    t = keras.layers.Flatten()(keras.layers.Embedding(30, 8, name="embedding")(tokens))
    merged = keras.layers.Concatenate()([h, v, t])
    outputs = keras.layers.Dense(3, activation="softmax", name="dense")(merged)
    model = compiled(keras.Model([images, volume, tokens], outputs))
    rng = np.random.default_rng(0)
    inputs = [rng.random((8, 6, 6, 3), np.float32), rng.random((8, 4, 4, 4, 2), np.float32), rng.integers(0, 30, (8, 5))]
    clustered = clustering.cluster(model, 4, entropy_weight=0)  # the nearest centroid: all 4 values stay in use
    clustered.fit(inputs, rng.integers(0, 3, 8), epochs=1, verbose=0)
    stripped = clustering.strip(clustered)
    counts = clustering.distinct_values(stripped)
    assert set(counts) == {
        "conv2d_t", "separable", "conv1d", "conv1d_t", "gru/cell.kernel", "gru/cell.recurrent_kernel",
        "lstm/cell.kernel", "lstm/cell.recurrent_kernel", "conv3d", "conv3d_t", "embedding", "dense",
    }
    assert set(counts.values()) == {4}
    np.testing.assert_allclose(stripped.predict(inputs, verbose=0), clustered.predict(inputs, verbose=0), atol=1e-5)

