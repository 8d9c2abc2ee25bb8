"""Weight clustering for Keras 3: `cluster`, train with `fit`, `strip`, and count `distinct_values`."""

from kstruct.clustering.centroids import DEFAULT_ENTROPY_WEIGHT, INITS
from kstruct.clustering.cluster import KERNEL_VALUES_ATTRIBUTE, cluster, distinct_values, strip
from kstruct.clustering.clusterable import CLUSTERABLE_LAYERS
from kstruct.clustering.step import Cluster
from kstruct.clustering.wrapper import ClusterWrapper

__all__ = [
    "CLUSTERABLE_LAYERS",
    "Cluster",
    "ClusterWrapper",
    "DEFAULT_ENTROPY_WEIGHT",
    "INITS",
    "KERNEL_VALUES_ATTRIBUTE",
    "cluster",
    "distinct_values",
    "strip",
]
