"""`PruneWrapper`: a layer wrapper that trains its layer with magnitude masks on its prunable weights.

Why a wrapper that substitutes the weight instead of rewriting the layer's math:
in Keras 3 `Dense.kernel` is read-only, and re-implementing every layer's `call`
would drift from Keras. The wrapper owns the extra state (mask, step, update
count) and runs the wrapped layer's own `call` inside a `keras.StatelessScope`
that maps the kernel to `kernel * mask`. Gradients flow to the unmasked weights
only, and the wrapped layer itself is never modified. A recurrent layer (LSTM, GRU,
SimpleRNN, also inside Bidirectional or TimeDistributed) has several prunable weights,
each with its own mask; its cell reads the masked kernels at every time step, so the
zeros hold inside the recurrence on every backend.

The schedule advances inside `call(training=True)`: no callback to remember
(tfmot's `UpdatePruningStep` trap). The step and the mask are weights, so they
are saved in `.keras` files and training resumes where it stopped.
"""

from __future__ import annotations

import inspect

import keras
from keras import ops

from kstruct.pruning.masks import magnitude_mask, n_by_m_mask
from kstruct.pruning.prunable import prunable_weights, skip_reason
from kstruct.pruning.schedules import ConstantSparsity, PruningSchedule


@keras.saving.register_keras_serializable(package="kstruct")
class PruneWrapper(keras.layers.Wrapper):
    """Masks the prunable weights of `layer` by magnitude while training.

    Args:
        layer: a prunable layer (Dense, Conv1D/2D/3D, their Transpose variants,
            DepthwiseConv2D, SeparableConv2D, LSTM, GRU, SimpleRNN, or a Bidirectional or
            TimeDistributed holding one of them).
        schedule: a `PruningSchedule`; when the masks are recomputed and to which sparsity.
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
        how = prunable_weights(layer)
        if not how:
            raise TypeError(
                "Expected a prunable layer (Dense, Conv*, DepthwiseConv2D, SeparableConv2D, LSTM, GRU, SimpleRNN, "
                f"or Bidirectional/TimeDistributed around one). Received: layer `{layer.name}` of type "
                f"{type(layer).__name__} ({skip_reason(layer)})"
            )
        kwargs.setdefault("name", f"pruned_{layer.name}")
        # The wrapper's own math (masks) runs in the layer's variable dtype, the inner layer computes in its
        # own policy: under mixed_float16's autocast scope torch would assign each mask to a float16 copy.
        kwargs.setdefault("dtype", layer.dtype_policy.variable_dtype)
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
        self._how = how
        # A mask (Embedding(mask_zero=True) before an LSTM) rides on the input tensor, so the
        # wrapped layer's own call picks it up; the wrapper passes on the mask the layer computes.
        self.supports_masking = layer.supports_masking

    @property
    def pruned_weights(self) -> list:
        """The wrapped layer's variables the masks apply to, in the order of `masks`."""
        return [how.of(self.layer) for how in self._how]

    @property
    def pruned_weight(self):
        """The first (for most layers the only) variable a mask applies to."""
        return self.pruned_weights[0]

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        weights = self.pruned_weights
        if self.m_by_n is not None:
            for how, weight in zip(self._how, weights):
                if weight.shape[how.input_axis] % self.m_by_n[1]:
                    raise ValueError(
                        f"Layer `{self.layer.name}` has {weight.shape[how.input_axis]} input channels in "
                        f"`{how.attribute}`, not a multiple of m={self.m_by_n[1]}, so "
                        f"{self.m_by_n[0]}:{self.m_by_n[1]} sparsity cannot apply. Leave it out with `layers=`."
                    )
        # The first mask keeps the name "mask" and its place before the step counters, so files
        # saved when the wrapper had a single mask load unchanged.
        # Distribution (Keras 3.15's add_weight takes no `synchronization`: the variable's "auto" is
        # TensorFlow's ON_WRITE, one mirrored copy per replica): a mask is "none", each replica writing
        # its own copy, because every replica computes it from the same mirrored weights at the same
        # step, so the copies stay equal; on TensorFlow it is assigned inside a `cond` branch, where a
        # cross-replica aggregation (a merge_call) is refused.
        self.masks = [
            self.add_weight(
                name="mask" if i == 0 else f"mask_{i}",
                shape=weight.shape,
                initializer="ones",
                trainable=False,
                dtype=weight.dtype,
                aggregation="none",
            )
            for i, weight in enumerate(weights)
        ]
        self.mask = self.masks[0]
        # The counters are "only_first_replica" (as Keras's optimizer `iterations`): the first replica's
        # increment is written to every copy, so the schedule advances once per global step, never
        # once per replica.
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), initializer="zeros", trainable=False, dtype="int64",
            aggregation="only_first_replica",
        )
        self.mask_updates = self.add_weight(
            name="mask_updates", shape=(), initializer="zeros", trainable=False, dtype="int64",
            aggregation="only_first_replica",
        )
        self.built = True

    def _new_masks(self, sparsity) -> list:
        masks = []
        for how, current in zip(self._how, self.masked_weights()):
            if self.m_by_n is not None:
                masks.append(n_by_m_mask(current, *self.m_by_n, axis=how.input_axis))
            else:
                masks.append(magnitude_mask(current, sparsity))
        return masks

    def _advance_schedule(self):
        should_update, sparsity = self.schedule(self.pruning_step.value)
        if keras.backend.backend() == "jax":
            # JAX traces the step without state: a branch cannot assign, so it returns the masks.
            masks = ops.cond(
                should_update,
                lambda: tuple(self._new_masks(sparsity)),
                lambda: tuple(ops.convert_to_tensor(mask) for mask in self.masks),
            )
            for mask, value in zip(self.masks, masks):
                mask.assign(value)
        else:
            # Assigned inside the branch: the steps between updates (most of them) copy nothing.
            def update():
                for mask, value in zip(self.masks, self._new_masks(sparsity)):
                    mask.assign(value)
                return ops.ones((), "int64")

            ops.cond(should_update, update, lambda: ops.zeros((), "int64"))
        self.mask_updates.assign_add(ops.cast(should_update, "int64"))
        self.pruning_step.assign_add(1)

    def stripped_weights(self) -> list:
        """The inner layer's weights with the masks baked in: what `strip` leaves (engine/wrappers.py)."""
        masked = {id(w): m for w, m in zip(self.pruned_weights, self.masked_weights())}
        return [keras.ops.convert_to_numpy(masked.get(id(weight), weight)) for weight in self.layer.weights]

    def masked_weights(self) -> list:
        """The pruned weights as the layer sees them: `weight * mask`, in the order of `masks`."""
        return [weight * mask for weight, mask in zip(self.pruned_weights, self.masks)]

    def masked_weight(self):
        """The first pruned weight as the layer sees it: `weight * mask`."""
        return self.masked_weights()[0]

    def call(self, inputs, training=None, mask=None):
        if training:
            self._advance_schedule()
        # A functional model records `mask=None` on a recurrent layer's node, and a masking layer
        # (Embedding(mask_zero=True)) hands a real mask: both go to a layer whose call takes one.
        keyword = {"mask": mask} if mask is not None and "mask" in inspect.signature(self.layer.call).parameters else {}
        pruned = {id(w): m for w, m in zip(self.pruned_weights, self.masked_weights())}
        # Every other variable maps to its current value, so nested stateless scopes
        # (JAX training) still see the trainer's values.
        mapping = [(v, pruned.get(id(v), v.value)) for v in self.layer.variables]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            entered = [(v, scope.get_current_value(v)) for v in self.layer.variables if id(v) not in pruned]
            outputs = self.layer(inputs, **keyword)
        # State the layer advanced inside the scope (a dropout seed) is written back to its variable.
        for variable, value in entered:
            current = scope.get_current_value(variable)
            if current is not value:
                variable.assign(current)
        return outputs

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

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
