"""`ClusterWrapper`: a layer wrapper that trains its layer with kernels shared out of a few centroids.

As `PruneWrapper` does with masks, the wrapper never modifies the wrapped layer:
it runs the layer's own `call` inside a `keras.StatelessScope` that maps each
clustered weight to `centroids[assignment]`. Gradients reach the centroids
through the lookup and the underlying weights through a straight-through
estimator; each training step reassigns every weight to its nearest centroid,
so a weight that drifts changes cluster. Centroids, assignments and sparsity
masks are weights: they are saved in `.keras` files and training resumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from kstruct.clustering.assign import lookup, nearest, nearest_by_rows
from kstruct.clustering.centroids import DEFAULT_ENTROPY_WEIGHT, check_entropy_weight, check_init, initial_centroids
from kstruct.clustering.clusterable import clusterable_weights, resolve


@dataclass(eq=False)
class _Clustered:
    """One clustered weight's state; a plain object, so Keras does not track the wrapped weight twice."""

    weight: object
    axis: int | None
    centroids: object
    open_slots: object
    assignments: object
    mask: object
    rates: object


def _variable_name(path: str) -> str:
    return path.replace(".", "_")


@keras.saving.register_keras_serializable(package="kstruct")
class ClusterWrapper(keras.layers.Wrapper):
    """Clusters the kernels of `layer` into `n_clusters` shared values while training.

    Args:
        layer: a clusterable layer (see `kstruct.clustering.CLUSTERABLE_LAYERS`).
        n_clusters: distinct values per kernel (per output channel with `per_channel`), >= 2.
        init: "kmeans++", "linear", "density" or "random"; how centroids start.
        per_channel: one set of centroids per output channel instead of one per kernel.
        preserve_sparsity: zeros in the kernel (from pruning) stay exactly zero;
            they take one of the `n_clusters` values, pinned at 0.
        seed: seed of the "kmeans++" and "random" initializations.
        entropy_weight: how much a weight prefers a busy centroid to the nearest one
            (see `centroids.entropy_constrained`); 0 assigns to the nearest.
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        n_clusters: int = 16,
        init: str = "kmeans++",
        per_channel: bool = False,
        preserve_sparsity: bool = True,
        seed: int = 0,
        entropy_weight: float = DEFAULT_ENTROPY_WEIGHT,
        **kwargs,
    ):
        weights = clusterable_weights(layer)
        if not weights:
            raise TypeError(
                "Expected a clusterable layer (Dense, Conv*, Conv*Transpose, SeparableConv*, DepthwiseConv2D, "
                f"Embedding, LSTM, GRU). Received: layer `{layer.name}` of type {type(layer).__name__}"
            )
        if isinstance(n_clusters, bool) or int(n_clusters) < 2:
            raise ValueError(f"Expected `n_clusters` >= 2. Received: n_clusters={n_clusters}")
        kwargs.setdefault("name", f"clustered_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy.variable_dtype)  # as PruneWrapper: own math in the variables' dtype
        super().__init__(layer, **kwargs)
        self.n_clusters = int(n_clusters)
        self.init = check_init(init)
        self.per_channel = bool(per_channel)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.seed = int(seed)
        self.entropy_weight = check_entropy_weight(entropy_weight)
        self._weights_spec = weights

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._state: list[tuple[str, _Clustered]] = []
        for spec in self._weights_spec:
            weight = resolve(self.layer, spec.path)
            shape = tuple(weight.shape)
            axis = spec.channel_axis % len(shape) if self.per_channel else None
            centroid_shape = (self.n_clusters,) if axis is None else (shape[axis], self.n_clusters)
            prefix = _variable_name(spec.path)
            # Distribution: every variable here is "none". The centroids train like any weight (the
            # optimizer reduces their gradients across replicas and updates every copy alike); the
            # assignments are recomputed each step from those mirrored centroids and weights, the same
            # on every replica; slots, rates and the mask are set by `initialize_clusters` outside any
            # training step, on every copy at once.
            centroids = self.add_weight(
                name=f"{prefix}_centroids", shape=centroid_shape, initializer="zeros", aggregation="none"
            )
            # 0 pins a centroid at zero (the pruned weights' value): it takes no gradient and no weight.
            open_slots = self.add_weight(
                name=f"{prefix}_open_slots", shape=centroid_shape, initializer="ones", trainable=False,
                aggregation="none",
            )
            assignments = self.add_weight(
                name=f"{prefix}_assignments", shape=shape, initializer="zeros", trainable=False, dtype="int32",
                aggregation="none",
            )
            # What joining each centroid costs beyond the squared distance (0: the nearest wins).
            rates = self.add_weight(
                name=f"{prefix}_rates", shape=centroid_shape, initializer="zeros", trainable=False, aggregation="none"
            )
            mask = None
            if self.preserve_sparsity:
                mask = self.add_weight(
                    name=f"{prefix}_sparsity_mask", shape=shape, initializer="ones", trainable=False,
                    aggregation="none",
                )
            self._state.append((spec.path, _Clustered(weight, axis, centroids, open_slots, assignments, mask, rates)))
        self.built = True

    def initialize_clusters(self) -> None:
        """Sets masks, centroids and assignments from the wrapped layer's current weights.

        One NumPy copy of a kernel at a time, released before the assignment (for an
        Embedding of millions of weights, each copy is tens of MB).
        """
        rng = np.random.default_rng(self.seed)
        for _, entry in self._state:
            values = keras.ops.convert_to_numpy(entry.weight)
            mask = values != 0 if self.preserve_sparsity else None
            pinned = mask is not None and not mask.all()
            free = self.n_clusters - 1 if pinned else self.n_clusters
            axis = entry.axis
            if axis is None:
                groups, masks = [values], [mask if pinned else None]
            else:
                groups = list(np.moveaxis(values, axis, 0))
                masks = list(np.moveaxis(mask, axis, 0)) if pinned else [None] * len(groups)
            found = [
                initial_centroids(g if m is None else g[m], free, self.init, rng, self.entropy_weight)
                for g, m in zip(groups, masks)
            ]
            del values, groups, masks
            centroids = np.stack([c for c, _ in found])
            rates = np.stack([r for _, r in found])
            open_slots = np.ones_like(centroids)
            if pinned:
                centroids, rates, open_slots = (
                    np.concatenate([np.zeros_like(a[:, :1]), a], axis=1) for a in (centroids, rates, open_slots)
                )
            shape = tuple(entry.centroids.shape)
            entry.centroids.assign(centroids.reshape(shape))
            entry.rates.assign(rates.reshape(shape))
            entry.open_slots.assign(open_slots.reshape(shape))
            if entry.mask is not None:
                entry.mask.assign(mask.astype("float32"))
            del mask
            index = nearest_by_rows(
                entry.weight, self._centroids(entry), entry.rates, entry.open_slots, entry.mask, entry.axis
            )
            entry.assignments.assign(index)

    def _centroids(self, entry):
        return entry.centroids * entry.open_slots

    def _nearest(self, entry):
        return nearest(
            ops.convert_to_tensor(entry.weight), self._centroids(entry), entry.rates, entry.open_slots, entry.mask, entry.axis
        )

    def clustered_weights(self) -> dict:
        """`{weight path: the weight as the layer sees it}`: each weight replaced by its centroid."""
        return {path: self._clustered(entry) for path, entry in self._state}

    def clustered_paths(self) -> list[str]:
        """The paths of the clustered weights ("kernel", "cell.kernel"), in order."""
        return [path for path, _ in self._state]

    def clustered_weight(self, path: str = "kernel"):
        """The weight at `path` as the layer sees it: each value replaced by its centroid."""
        return self._clustered(self._entry(path))

    def _clustered(self, entry, straight_through=None):
        value = lookup(self._centroids(entry), entry.assignments, entry.axis)
        if straight_through is not None:
            # Forward: the centroid. Backward: to the centroids, and straight through to the weight.
            value = value + straight_through - ops.stop_gradient(straight_through)
        return value if entry.mask is None else value * entry.mask

    def _entry(self, path: str) -> _Clustered:
        for name, entry in self._state:
            if name == path:
                return entry
        raise KeyError(f"Layer `{self.layer.name}` has no clustered weight {path!r}. Clustered: {[n for n, _ in self._state]}")

    def centroids_of(self, path: str = "kernel") -> np.ndarray:
        """The centroids of the weight at `path` as NumPy, `(k,)` or `(channels, k)`; a pinned zero included."""
        return keras.ops.convert_to_numpy(self._centroids(self._entry(path)))

    def assignments_of(self, path: str = "kernel") -> np.ndarray:
        """The index of each weight's centroid, as NumPy."""
        return keras.ops.convert_to_numpy(self._entry(path).assignments)

    def kernel_values(self) -> dict:
        """`{weight path: {"values": the values its weights hold, "axis": their channel axis or None}}`.

        A centroid no weight is assigned to (the entropy-constrained assignment can
        empty one) is left out, so that a following QAT cannot bring it back: per
        channel, a channel's list is filled up with its first held value instead.
        """
        held = {}
        for path, entry in self._state:
            centroids = keras.ops.convert_to_numpy(self._centroids(entry))
            index = keras.ops.convert_to_numpy(entry.assignments)
            if entry.axis is None:
                values = centroids[np.bincount(index.ravel(), minlength=centroids.size) > 0]
            else:
                rows = np.moveaxis(index, entry.axis, -1).reshape(-1, centroids.shape[0])
                values = centroids.copy()
                for channel, row in enumerate(centroids):
                    used = np.unique(rows[:, channel])
                    values[channel] = np.concatenate([row[used], np.full(row.size - used.size, row[used[0]])])
            held[path] = {"values": values, "axis": entry.axis}
        return held

    def call(self, inputs, *args, training=None, **kwargs):
        substituted = {}
        for _, entry in self._state:
            weight = ops.convert_to_tensor(entry.weight)
            if training:
                entry.assignments.assign(self._nearest(entry))
            substituted[id(entry.weight)] = self._clustered(entry, straight_through=weight)
        mapping = [(v, substituted.get(id(v), v.value)) for v in self.layer.variables]
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(inputs, *args, training=training, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            n_clusters=self.n_clusters,
            init=self.init,
            per_channel=self.per_channel,
            preserve_sparsity=self.preserve_sparsity,
            seed=self.seed,
            entropy_weight=self.entropy_weight,
        )
        return config
