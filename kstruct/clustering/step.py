"""The `cluster` strategy step: wrap, fine-tune the centroids, strip, count the values."""

from __future__ import annotations

import keras

from kstruct.clustering.centroids import DEFAULT_ENTROPY_WEIGHT, check_entropy_weight, check_init
from kstruct.clustering.cluster import cluster, distinct_values, strip, wrappers
from kstruct.engine.arguments import finite_number_argument
from kstruct.engine.step import StepResult, TrainingStep
from kstruct.engine.training import StepContext


class Cluster(TrainingStep):
    """Weight clustering: each kernel keeps `n_clusters` shared values, fine-tuned with `fit`.

    Clustering shrinks the gzipped file, not the raw one: a float or int8 kernel
    stores every weight either way, but one holding 16 values compresses well.
    The returned model is stripped (plain layers) and declares each kernel's
    values, so a following `qat` keeps them. The notes hold the distinct values
    per layer (per output channel with `per_channel`).

    Args:
        n_clusters: values per kernel (per output channel with `per_channel`), >= 2.
        init: "kmeans++", "linear", "density" or "random".
        per_channel: one set of centroids per output channel.
        preserve_sparsity: keep the zeros of a previous `prune` exactly zero.
        entropy_weight: how much a weight prefers a busy centroid to the nearest
            one, for a smaller gzipped file (see `kstruct.clustering.cluster`).
        epochs: fine-tuning epochs (default: optimize's `epochs`).
        layers: which layers to cluster (a name, a regex, a list of them);
            DepthwiseConv2D only when named.
        distill: fine-tune from the teacher's class scores as well as the labels.
        **training: `optimizer`, `learning_rate`, `lr_schedule`, `batch_size` (see `TrainingStep`).
    """

    name = "cluster"
    search_rank = 50
    positional = ("n_clusters",)

    def __init__(
        self,
        n_clusters: int = 16,
        *,
        init: str = "kmeans++",
        per_channel: bool = False,
        preserve_sparsity: bool = True,
        entropy_weight: float = DEFAULT_ENTROPY_WEIGHT,
        epochs: int | None = None,
        layers: str | list[str] | None = None,
        distill: bool = False,
        **training,
    ):
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 2:
            raise ValueError(f"Expected `n_clusters` to be an integer >= 2. Received: n_clusters={n_clusters!r}")
        self.n_clusters = n_clusters
        self.init = check_init(init)
        self.per_channel = bool(per_channel)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.entropy_weight = check_entropy_weight(finite_number_argument("entropy_weight", entropy_weight))
        self.layers = layers
        self.init_training(epochs, distill, training)

    @classmethod
    def search_space(cls, hp, space) -> "Cluster | None":
        """`auto` tries a number of shared values (0: off) only when the budget counts the gzipped file."""
        if not space.size_by_gzip:
            return None
        n_clusters = hp.Choice("cluster", [0, 8, 16, 32], default=0)
        return cls(n_clusters) if n_clusters else None

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        wrapped = cluster(
            model,
            self.n_clusters,
            init=self.init,
            per_channel=self.per_channel,
            preserve_sparsity=self.preserve_sparsity,
            entropy_weight=self.entropy_weight,
            layers=self.layers,
        )
        self.training_context(context).fit(wrapped, distill=self.distill)
        stripped = strip(wrapped)
        counted = {wrapper.layer.name for wrapper in wrappers(wrapped)}
        counts = distinct_values(stripped, per_channel=self.per_channel)
        notes = {
            "distinct_values": {name: n for name, n in counts.items() if name.split("/")[0] in counted},
            "distinct_values_per": "output channel (largest)" if self.per_channel else "kernel",
        }
        return StepResult(model=context.compile(stripped), notes=notes)
