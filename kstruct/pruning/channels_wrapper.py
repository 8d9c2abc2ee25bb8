"""`ChannelMaskWrapper`: a layer that reads some of its input channels through a mask.

Why mask the readers and not the producers: a removed channel must stop
influencing the model, and the only layers through which a channel reaches the
rest of the model are the Conv/Dense layers that read it (its group's "input"
members: BatchNorm, activations, Add ties and pooling only carry it along). Zero a
channel's input weights in every reader, and the masked model computes exactly
what the model without that channel computes, whatever the channel's values
(BatchNorm's beta, a sigmoid's 0.5). That is what makes `strip`'s surgery exact.

Every wrapped reader of a group holds the group's channel ranking (decided once,
by `prune_channels`, from the whole group) and the same schedule, and advances
its step once per training call: so all readers of a group mask the same
channels at the same step, with no shared state beyond the layers' own weights.
"""

from __future__ import annotations

import keras
from keras import ops

from kstruct.pruning.schedules import PruningSchedule

# Layer type -> the weight that reads the input channels, and its input-channel axis.
READERS: dict[type, tuple[str, int]] = {
    keras.layers.Dense: ("kernel", 0),
    keras.layers.Conv1D: ("kernel", -2),
    keras.layers.Conv2D: ("kernel", -2),
    keras.layers.Conv3D: ("kernel", -2),
    keras.layers.Conv1DTranspose: ("kernel", -1),
    keras.layers.Conv2DTranspose: ("kernel", -1),
    keras.layers.Conv3DTranspose: ("kernel", -1),
    keras.layers.SeparableConv1D: ("depthwise_kernel", -2),
    keras.layers.SeparableConv2D: ("depthwise_kernel", -2),
}


def reader_weight(layer: keras.layers.Layer) -> tuple[str, int] | None:
    """The (weight attribute, input axis) through which `layer` reads its input channels, or None."""
    for layer_type, how in READERS.items():
        if type(layer) is layer_type:
            return how
    return None


def kept_channels(group_size, sparsity, round_to: int):
    """Channels a group of `group_size` keeps at `sparsity`: rounded up to a multiple of `round_to`, at least 1."""
    size = ops.cast(group_size, "float32")
    kept = size - ops.round(ops.cast(sparsity, "float32") * size)
    kept = ops.ceil(kept / round_to) * round_to
    return ops.clip(kept, 1.0, ops.maximum(size, 1.0))


@keras.saving.register_keras_serializable(package="kstruct")
class ChannelMaskWrapper(keras.layers.Wrapper):
    """Masks the input channels of `layer` that its groups' schedule has removed.

    Args:
        layer: a Dense, Conv or SeparableConv layer (a reader of pruned channels).
        schedule: a `PruningSchedule`; its sparsity is the fraction of each group's
            channels masked, and it says when the mask is recomputed.
        round_to: kept channels per group are a multiple of this (kernels prefer 4 or 8).

    The weights `channel_rank` and `group_size` (one entry per input position; size 0
    for positions outside any pruned group) are set by `prune_channels`.
    """

    def __init__(self, layer: keras.layers.Layer, schedule: PruningSchedule, round_to: int = 1, **kwargs):
        how = reader_weight(layer)
        if how is None:
            raise TypeError(
                "Expected a Dense, Conv or SeparableConv layer to read pruned channels. "
                f"Received: layer `{layer.name}` of type {type(layer).__name__}"
            )
        kwargs.setdefault("name", f"channels_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy.variable_dtype)  # as PruneWrapper: own math in the variables' dtype
        super().__init__(layer, **kwargs)
        self.schedule = schedule
        self.round_to = int(round_to)
        self._attribute, self._axis = how

    @property
    def reading_weight(self):
        return getattr(self.layer, self._attribute)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        width = self.reading_weight.shape[self._axis]
        # Distribution (as PruneWrapper): ranks and group sizes are written only outside training steps,
        # to every replica's copy at once; the mask is "none", each replica computing the same mask from
        # the same ranks and step; the counters are "only_first_replica", so the schedule advances once
        # per global step.
        self.channel_rank = self.add_weight(name="channel_rank", shape=(width,), initializer="zeros",
                                            trainable=False, dtype="int32", aggregation="none")
        self.group_size = self.add_weight(name="group_size", shape=(width,), initializer="zeros",
                                          trainable=False, dtype="int32", aggregation="none")
        self.mask = self.add_weight(name="mask", shape=(width,), initializer="ones", trainable=False,
                                    aggregation="none")
        self.pruning_step = self.add_weight(name="pruning_step", shape=(), initializer="zeros",
                                            trainable=False, dtype="int64", aggregation="only_first_replica")
        self.mask_updates = self.add_weight(name="mask_updates", shape=(), initializer="zeros",
                                            trainable=False, dtype="int64", aggregation="only_first_replica")
        self.built = True

    def _new_mask(self, sparsity):
        kept = kept_channels(self.group_size.value, sparsity, self.round_to)
        keep = ops.logical_or(ops.equal(self.group_size.value, 0), ops.cast(self.channel_rank.value, "float32") < kept)
        return ops.cast(keep, self.mask.dtype)

    def mask_now(self, sparsity: float) -> None:
        """Sets the mask to its final state for `sparsity` at once, without training (to measure the
        pruned structure's cost before any fine-tuning)."""
        self.mask.assign(self._new_mask(sparsity))
        self.mask_updates.assign_add(1)

    def _advance_schedule(self):
        should_update, sparsity = self.schedule(self.pruning_step.value)
        mask = ops.cond(should_update, lambda: self._new_mask(sparsity), lambda: ops.convert_to_tensor(self.mask))
        self.mask.assign(mask)
        self.mask_updates.assign_add(ops.cast(should_update, "int64"))
        self.pruning_step.assign_add(1)

    def masked_weight(self):
        """The reading weight with the removed channels' slices zeroed."""
        weight = self.reading_weight
        shape = [1] * len(weight.shape)
        shape[self._axis] = -1
        return weight * ops.cast(ops.reshape(self.mask, shape), weight.dtype)

    def call(self, inputs, training=None):
        if training:
            self._advance_schedule()
        weight = self.reading_weight
        # Other variables map to their current values, so a trainer's stateless scope (JAX) still applies.
        mapping = [(v, v.value) for v in self.layer.variables if v is not weight]
        mapping.append((weight, self.masked_weight()))
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config["schedule"] = keras.saving.serialize_keras_object(self.schedule)
        config["round_to"] = self.round_to
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        schedule = keras.saving.deserialize_keras_object(config.pop("schedule"), custom_objects=custom_objects)
        return cls(layer, schedule=schedule, **config)
