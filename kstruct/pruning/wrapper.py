"""`PruneWrapper`: a layer wrapper that trains its layer with a magnitude mask on one weight.

Why a wrapper that substitutes the weight instead of rewriting the layer's math:
in Keras 3 `Dense.kernel` is read-only, and re-implementing every layer's `call`
would drift from Keras. The wrapper owns the extra state (mask, step, update
count) and runs the wrapped layer's own `call` inside a `keras.StatelessScope`
that maps the kernel to `kernel * mask`. Gradients flow to the unmasked weights
only, and the wrapped layer itself is never modified.

The schedule advances inside `call(training=True)`: no callback to remember
(tfmot's `UpdatePruningStep` trap). The step and the mask are weights, so they
are saved in `.keras` files and training resumes where it stopped.
"""

from __future__ import annotations

import keras
from keras import ops

from kstruct.pruning.masks import magnitude_mask, n_by_m_mask
from kstruct.pruning.prunable import prunable_weight
from kstruct.pruning.schedules import ConstantSparsity, PruningSchedule


@keras.saving.register_keras_serializable(package="kstruct")
class PruneWrapper(keras.layers.Wrapper):
    """Masks the prunable weight of `layer` by magnitude while training.

    Args:
        layer: a prunable layer (Dense, Conv1D/2D/3D, their Transpose variants,
            DepthwiseConv2D or SeparableConv2D).
        schedule: a `PruningSchedule`; when the mask is recomputed and to which sparsity.
        m_by_n: `(n, m)` to keep `n` of every `m` weights along the input-channel
            axis instead of unstructured magnitude pruning. The schedule then only
            says when the pattern is computed.
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        schedule: PruningSchedule | None = None,
        m_by_n: tuple[int, int] | None = None,
        **kwargs,
    ):
        how = prunable_weight(layer)
        if how is None:
            raise TypeError(
                f"Expected a prunable layer (Dense, Conv*, DepthwiseConv2D, SeparableConv2D). "
                f"Received: layer `{layer.name}` of type {type(layer).__name__}"
            )
        kwargs.setdefault("name", f"pruned_{layer.name}")
        super().__init__(layer, **kwargs)
        if m_by_n is not None:
            n, m = (int(v) for v in m_by_n)
            if not 0 < n < m:
                raise ValueError(f"Expected `m_by_n` = (n, m) with 0 < n < m. Received: m_by_n={m_by_n}")
            m_by_n = (n, m)
            if schedule is None:
                schedule = ConstantSparsity(1.0 - n / m, begin_step=0, frequency=100)
        if schedule is None:
            raise ValueError("Expected a `schedule` (a kstruct.pruning schedule) or `m_by_n`. Received neither.")
        self.schedule = schedule
        self.m_by_n = m_by_n
        self._weight_attribute = how.attribute
        self._input_axis = how.input_axis

    @property
    def pruned_weight(self):
        """The wrapped layer's variable that the mask applies to."""
        return getattr(self.layer, self._weight_attribute)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        weight = self.pruned_weight
        if self.m_by_n is not None and weight.shape[self._input_axis] % self.m_by_n[1]:
            raise ValueError(
                f"Layer `{self.layer.name}` has {weight.shape[self._input_axis]} input channels, not a "
                f"multiple of m={self.m_by_n[1]}, so {self.m_by_n[0]}:{self.m_by_n[1]} sparsity cannot apply. "
                "Leave it out with `layers=`."
            )
        self.mask = self.add_weight(
            name="mask", shape=weight.shape, initializer="ones", trainable=False, dtype=weight.dtype
        )
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), initializer="zeros", trainable=False, dtype="int64"
        )
        self.mask_updates = self.add_weight(
            name="mask_updates", shape=(), initializer="zeros", trainable=False, dtype="int64"
        )
        self.built = True

    def _new_mask(self, sparsity):
        current = self.pruned_weight * self.mask
        if self.m_by_n is not None:
            return n_by_m_mask(current, *self.m_by_n, axis=self._input_axis)
        return magnitude_mask(current, sparsity)

    def _advance_schedule(self):
        should_update, sparsity = self.schedule(self.pruning_step.value)
        if keras.backend.backend() == "jax":
            # JAX traces the step without state: a branch cannot assign, so it returns the mask.
            mask = ops.cond(should_update, lambda: self._new_mask(sparsity), lambda: ops.convert_to_tensor(self.mask))
            self.mask.assign(mask)
        else:
            # Assigned inside the branch: the steps between updates (most of them) copy nothing.
            def update():
                self.mask.assign(self._new_mask(sparsity))
                return ops.ones((), "int64")

            ops.cond(should_update, update, lambda: ops.zeros((), "int64"))
        self.mask_updates.assign_add(ops.cast(should_update, "int64"))
        self.pruning_step.assign_add(1)

    def stripped_weights(self) -> list:
        """The inner layer's weights with the mask baked in: what `strip` leaves (engine/wrappers.py)."""
        pruned = self.pruned_weight
        masked = keras.ops.convert_to_numpy(self.masked_weight())
        return [masked if weight is pruned else keras.ops.convert_to_numpy(weight) for weight in self.layer.weights]

    def masked_weight(self):
        """The pruned weight as the layer sees it: `weight * mask`."""
        return self.pruned_weight * self.mask

    def call(self, inputs, training=None):
        if training:
            self._advance_schedule()
        weight = self.pruned_weight
        # Every other variable maps to its current value, so nested stateless scopes
        # (JAX training) still see the trainer's values.
        mapping = [(v, v.value) for v in self.layer.variables if v is not weight]
        mapping.append((weight, self.masked_weight()))
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config["schedule"] = keras.saving.serialize_keras_object(self.schedule)
        config["m_by_n"] = list(self.m_by_n) if self.m_by_n is not None else None
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        schedule = keras.saving.deserialize_keras_object(config.pop("schedule"), custom_objects=custom_objects)
        return cls(layer, schedule=schedule, **config)
