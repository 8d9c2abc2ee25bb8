"""Model-level clustering: wrap the clusterable layers (`cluster`), bake the centroids in (`strip`), count values."""

from __future__ import annotations

import warnings

import keras
import numpy as np

from kstruct.clustering.centroids import DEFAULT_ENTROPY_WEIGHT, check_entropy_weight, check_init
from kstruct.clustering.clusterable import clusterable_weights, is_opt_in, resolve
from kstruct.clustering.wrapper import ClusterWrapper
from kstruct._graph import check_graph_model, fresh_copy, leaf_layers, rebuild
from kstruct.engine.layer_selection import LayerSelector, select_layers


# The attribute a stripped layer carries to declare the values its kernels may take.
# Other techniques (QAT) read it by this name, without importing clustering.
KERNEL_VALUES_ATTRIBUTE = "kstruct_kernel_values"



def _chosen(model: keras.Model, layers: LayerSelector) -> list[keras.layers.Layer]:
    """The layers `layers` selects; by default every clusterable layer that is not opt-in only."""
    candidates = [layer for layer in leaf_layers(model) if clusterable_weights(layer)]
    return select_layers(candidates, layers, kind="clusterable", default=lambda layer: not is_opt_in(layer))


def _too_small(layer: keras.layers.Layer, n_clusters: int, per_channel: bool) -> str | None:
    """Why `layer` has too few weights for `n_clusters` values (per channel), or None."""
    for spec in clusterable_weights(layer):
        weight = resolve(layer, spec.path)
        shape = tuple(weight.shape)
        per_group = int(np.prod(shape)) // (shape[spec.channel_axis] if per_channel else 1)
        if per_group < n_clusters:
            where = "per output channel" if per_channel else "in all"
            return f"{layer.name} ({spec.path}: {per_group} weights {where})"
    return None


def cluster(
    model: keras.Model,
    n_clusters: int = 16,
    *,
    init: str = "kmeans++",
    per_channel: bool = False,
    preserve_sparsity: bool = True,
    layers: LayerSelector = None,
    seed: int = 0,
    entropy_weight: float = DEFAULT_ENTROPY_WEIGHT,
) -> keras.Model:
    """Returns a copy of `model` whose clusterable kernels train as `n_clusters` shared values.

    Args:
        model: a Sequential or functional Keras model (nested ones included). It is
            not modified.
        n_clusters: distinct values per kernel (per output channel with `per_channel`), >= 2.
        init: "kmeans++" (the default; seeded k-means), "linear" (evenly spaced
            between the kernel's min and max), "density" (evenly spaced in its
            cumulative distribution) or "random" (uniform between min and max).
        per_channel: one set of centroids per output channel. More accurate, and
            what survives per-channel int8 quantization unchanged.
        preserve_sparsity: zeros already in a kernel (from pruning) stay exactly
            zero; zero then counts as one of the `n_clusters` values.
        layers: which layers: a name, a regex matched against whole names, a list
            of those, or a predicate `layer -> bool`. Default: every Dense, Conv*,
            Conv*Transpose, SeparableConv* (pointwise), Embedding, LSTM and GRU.
            DepthwiseConv2D is clustered only when named here.
        seed: seed of the "kmeans++" and "random" initializations.
        entropy_weight: trades a little distortion for a smaller gzipped file: a
            weight joins the centroid with the least `(w - c)**2 + entropy_weight *
            var(kernel) * bits(c)`, `bits(c)` being `-log2` of the share of weights
            at `c` (entropy-constrained k-means). 0: the nearest centroid.

    Returns:
        A new model, compiled like `model` if it was. Train it with `fit`, then `strip`.

    Raises:
        UnsupportedModelError: for subclassed models.
        ValueError: for `n_clusters` < 2, an unknown `init`, a `layers` entry that
            matches no clusterable layer, or when no layer is left to cluster.
    """
    check_graph_model(model, "kstruct.clustering.cluster")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
        raise ValueError(f"Expected `n_clusters` to be an integer >= 2. Received: n_clusters={n_clusters!r}")
    check_init(init)
    check_entropy_weight(entropy_weight)
    chosen = _chosen(model, layers)
    skipped = [reason for reason in (_too_small(layer, n_clusters, per_channel) for layer in chosen) if reason]
    if skipped:
        warnings.warn(
            f"kstruct: not clustered, fewer weights than n_clusters={n_clusters}: " + ", ".join(skipped),
            stacklevel=2,
        )
        chosen = [layer for layer in chosen if _too_small(layer, n_clusters, per_channel) is None]
    if not chosen:
        raise ValueError(f"No layer left to cluster with n_clusters={n_clusters}: " + ", ".join(skipped))
    chosen_ids = {id(layer) for layer in chosen}

    def replace(layer):
        if id(layer) in chosen_ids:
            return ClusterWrapper(
                fresh_copy(layer),
                n_clusters=int(n_clusters),
                init=init,
                per_channel=per_channel,
                preserve_sparsity=preserve_sparsity,
                seed=seed,
                entropy_weight=entropy_weight,
            )
        return fresh_copy(layer)

    def copy_weights(original, new_layer):
        if isinstance(new_layer, ClusterWrapper):
            new_layer.layer.set_weights(original.get_weights())
            new_layer.initialize_clusters()
        else:
            new_layer.set_weights(original.get_weights())

    return rebuild(model, replace, copy_weights)


def wrappers(model: keras.Model) -> list[ClusterWrapper]:
    """Every ClusterWrapper in `model`, nested models included."""
    return [layer for layer in leaf_layers(model) if isinstance(layer, ClusterWrapper)]


def strip(model: keras.Model) -> keras.Model:
    """Returns a plain Keras model: the original layer classes, each kernel holding only its centroids.

    Each stripped layer declares its allowed values in the attribute
    `kstruct_kernel_values` (`{weight path: {"values": ..., "axis": ...}}`), which
    `kstruct.quantization.quantize` reads to keep the clusters through QAT. The
    declaration lives on the layer object, so it does not survive `.keras` saving.

    Args:
        model: a model returned by `cluster` (trained or not). It is not modified.
    """
    check_graph_model(model, "kstruct.clustering.strip")

    def replace(layer):
        return fresh_copy(layer.layer) if isinstance(layer, ClusterWrapper) else fresh_copy(layer)

    def copy_weights(original, new_layer):
        if not isinstance(original, ClusterWrapper):
            new_layer.set_weights(original.get_weights())
            return
        # One clustered kernel in flight at a time: its tensor is dropped once it is NumPy.
        by_id = {id(resolve(original.layer, path)): path for path in original.clustered_paths()}
        weights = [
            keras.ops.convert_to_numpy(original.clustered_weight(by_id[id(v)])) if id(v) in by_id else v.numpy()
            for v in original.layer.weights
        ]
        new_layer.set_weights(weights)
        del weights
        setattr(new_layer, KERNEL_VALUES_ATTRIBUTE, original.kernel_values())

    return rebuild(model, replace, copy_weights)


def _distinct(values: np.ndarray, axis: int | None) -> int:
    if axis is None:
        return int(np.unique(values).size)
    moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    return max(int(np.unique(row).size) for row in moved)


def distinct_values(model: keras.Model, *, per_channel: bool = False) -> dict[str, int]:
    """`{layer/weight: distinct values}` of every clusterable weight (the largest count over channels if `per_channel`).

    Reads a wrapped model's clustered weights, or a plain model's kernels.
    """
    counts = {}
    for layer in leaf_layers(model):
        inner = layer.layer if isinstance(layer, ClusterWrapper) else layer
        specs = clusterable_weights(inner)
        if not specs or not inner.built:
            continue
        clustered = layer.clustered_weights() if isinstance(layer, ClusterWrapper) else {}
        for spec in specs:
            value = clustered.get(spec.path)
            value = resolve(inner, spec.path) if value is None else value
            values = keras.ops.convert_to_numpy(value)
            name = inner.name if len(specs) == 1 else f"{inner.name}/{spec.path}"
            counts[name] = _distinct(values, spec.channel_axis % values.ndim if per_channel else None)
    return counts
