"""Fake quantization: symmetric int8 weights, and int8 activations with learned ranges.

Everything lowers to TensorFlow's FakeQuant ops (through
`keras.quantizers.fake_quant_with_min_max_vars`), which the TFLite converter
reads as the quantization parameters of real int8 kernels. The arithmetic
matches TFLite's: weights are symmetric with a narrow range ([-127, 127],
zero point 0, so a zero weight stays exactly zero); activations are asymmetric
over the full [-128, 127] range with a zero point that makes 0.0 exact.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import keras
from keras import ops

NUM_BITS = 8
WEIGHT_BITS = (8, 4)  # 4: the int4 target's kernels (tflite_export.int4)

# Set while a QAT model is traced or run for its float twin (see `float_export`).
_FLOAT_EXPORT: contextvars.ContextVar = contextvars.ContextVar("kstruct_float_export", default=None)


@contextlib.contextmanager
def float_export(record: list | None = None) -> Iterator[None]:
    """Runs a QAT model as the float file ai-edge-quantizer starts from (the `int4` target).

    Inside, every `FakeQuant` passes its input through (appending `(layer, input)` to
    `record` when given, on eager calls), and weights are rounded to their grid with
    plain ops the converter folds into float constants instead of FakeQuant ops it
    would keep as QUANTIZE/DEQUANTIZE. The float file so holds exactly the QAT
    model's fake-quantized kernels, and `record` says which activation each range
    belongs to.
    """
    token = _FLOAT_EXPORT.set([] if record is None else record)
    try:
        yield
    finally:
        _FLOAT_EXPORT.reset(token)

# TFLite fixes the output scale of some int8 kernels; simulating any other range
# would make the converter insert a requantize step (or fail).
UNIT_RANGE = (0.0, 255.0 / 256.0)  # LOGISTIC, SOFTMAX: scale 1/256, zero point -128
TANH_RANGE = (-1.0, 127.0 / 128.0)  # TANH: scale 1/128, zero point 0


def fake_quant(
    x, min_value, max_value, *, narrow_range: bool = False, axis: int | None = None, num_bits: int = NUM_BITS
):
    """Quantizes `x` to `num_bits` (8 unless a 4-bit kernel) over `[min_value, max_value]` and back to float (straight-through gradient).

    Per channel (`axis` set), the channel axis is moved last around Keras's op:
    off TensorFlow, `fake_quant_with_min_max_vars` broadcasts per-channel ranges
    against the last axis whatever `axis` says, so a depthwise kernel
    `(h, w, C, 1)` quantized along axis 2 came back `(h, w, C, C)`. On
    TensorFlow Keras makes this same transpose itself, so the graph the
    converter reads does not change.
    """
    if axis is None or axis % len(x.shape) == len(x.shape) - 1:
        return keras.quantizers.fake_quant_with_min_max_vars(
            x, min_value, max_value, num_bits=num_bits, narrow_range=narrow_range, axis=axis
        )
    axis = axis % len(x.shape)
    last = len(x.shape) - 1
    outputs = keras.quantizers.fake_quant_with_min_max_vars(
        ops.swapaxes(x, axis, last), min_value, max_value, num_bits=num_bits, narrow_range=narrow_range, axis=last
    )
    return ops.swapaxes(outputs, axis, last)


MIN_ACTIVATION_RANGE = 1e-3  # an activation range at least this wide; all-zero outputs stay exact zeros


def symmetric_range(weight, axis: int | None):
    """`max|weight|` per tensor (axis None) or per slice along `axis`; all-zero slices get 1.0.

    An all-zero channel (a pruned filter) would give a zero scale, and TFLite's
    int32 bias scale (input scale x weight scale) with it; any positive range
    still quantizes the zeros to 0.
    """
    magnitude = ops.abs(weight)
    if axis is None:
        bound = ops.max(magnitude)
    else:
        axis = axis % len(weight.shape)
        bound = ops.max(magnitude, axis=[i for i in range(len(weight.shape)) if i != axis])
    return ops.where(bound > 0, bound, ops.ones_like(bound))


def quantize_weight(weight, axis: int | None = None, bits: int = NUM_BITS):
    """Symmetric, narrow-range fake quantization of a weight to `bits` (8 or 4), per tensor or per `axis`.

    The range follows the weight (TFLite computes it from the final weight at
    conversion), with no gradient through it: the straight-through estimator
    passes gradients to the weight inside the range. The grid is
    `k * max|w| / (2**(bits-1) - 1)`, `|k| <= 2**(bits-1) - 1`: zero stays exact, and at
    4 bits it is the grid ai-edge-quantizer's symmetric int4 kernels store.
    """
    if bits not in WEIGHT_BITS:
        raise ValueError(f"Expected `bits` to be one of {WEIGHT_BITS}. Received: bits={bits!r}")
    bound = ops.stop_gradient(symmetric_range(weight, axis))
    if _FLOAT_EXPORT.get() is not None:
        return _rounded_to_grid(weight, bound, bits, axis)
    return fake_quant(weight, -bound, bound, narrow_range=True, axis=axis, num_bits=bits)


def _rounded_to_grid(weight, bound, bits: int, axis: int | None):
    """What `quantize_weight` computes, in plain ops (rounding half up, as TensorFlow's FakeQuant does)."""
    qmax = float(2 ** (bits - 1) - 1)
    if axis is not None:
        shape = [1] * len(weight.shape)
        shape[axis % len(weight.shape)] = -1
        bound = ops.reshape(bound, shape)
    scale = bound / qmax
    return ops.clip(ops.floor(weight / scale + 0.5), -qmax, qmax) * scale


def quantize_fixed(x, value_range: tuple[float, float]):
    """Fake quantization over a fixed range (sigmoid, softmax and tanh outputs)."""
    low, high = value_range
    return fake_quant(x, low, high)


@keras.saving.register_keras_serializable(package="kstruct")
class FakeQuant(keras.layers.Layer):
    """Fake-quantizes a tensor to int8 over a range tracked while training.

    The range starts at the first training batch's min/max, then follows an
    exponential moving average (`ema_decay`) of each batch's min/max, always
    including 0. At inference (and in the TFLite file) it is frozen. The range
    variables are saved with the model, so training can resume.

    A `nonnegative` tensor (a ReLU/ReLU6 output) has a minimum of exactly 0, so
    only its maximum is measured: one reduction over the tensor per step instead
    of two, on what are usually a model's largest activations.

    A fixed `value_range` (the output grid TFLite's LOGISTIC, SOFTMAX and TANH
    kernels impose) applies at inference only: its steps are at most 1/128, and a
    cross-entropy on probabilities rounded to multiples of 1/256 has no gradient
    wherever a probability rounds to 0, which stalls training.

    Args:
        ema_decay: weight of the old range in each update, in [0, 1).
        value_range: `(min, max)` to use a fixed range instead (no variables).
        nonnegative: the inputs are never negative (a ReLU's output); the minimum stays 0.
    """

    def __init__(
        self,
        ema_decay: float = 0.99,
        value_range: tuple[float, float] | None = None,
        nonnegative: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # int8 simulation is float32 under any global policy (quantize.py)
        super().__init__(**kwargs)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"Expected `ema_decay` in [0, 1). Received: ema_decay={ema_decay}")
        if value_range is not None:
            low, high = (float(v) for v in value_range)
            if not low <= 0.0 <= high or low == high:
                raise ValueError(f"Expected `value_range` (min, max) with min <= 0 <= max, min < max. Received: {value_range}")
            value_range = (low, high)
        self.ema_decay = float(ema_decay)
        self.value_range = value_range
        self.nonnegative = bool(nonnegative)
        self.supports_masking = True

    def build(self, input_shape=None):
        if self.value_range is None:
            low = 0.0 if self.nonnegative else -6.0
            # Distribution: each replica observes its own share of the batch, so the range is "mean":
            # every copy holds the replicas' average and the int8 file's scale does not depend on which
            # copy is saved. `observed` (a flag set to 1) is "only_first_replica".
            self.min_value = self.add_weight(
                name="min_value", shape=(), initializer=keras.initializers.Constant(low), trainable=False,
                aggregation="mean",
            )
            self.max_value = self.add_weight(
                name="max_value", shape=(), initializer=keras.initializers.Constant(6.0), trainable=False,
                aggregation="mean",
            )
            self.observed = self.add_weight(
                name="observed", shape=(), initializer="zeros", trainable=False, aggregation="only_first_replica"
            )
        self.built = True

    def observe(self, x):
        """Moves the range toward `x`'s min/max (the first call sets it).

        Each bound becomes `old * keep + batch * (1 - keep)` with
        `keep = ema_decay * observed`: 0 on the first batch, which so sets the
        range, with no branch; QAT runs this every step on every activation.
        """
        x = ops.stop_gradient(ops.cast(x, "float32"))
        keep = self.ema_decay * self.observed
        take = 1.0 - keep
        if not self.nonnegative:
            self.min_value.assign(self.min_value * keep + ops.minimum(ops.min(x), 0.0) * take)
        # At least MIN_ACTIVATION_RANGE wide: a dead layer (a ReLU whose outputs are all 0) would give
        # [0, 0], a zero scale, and an int8 file LiteRT's XNNPACK delegate refuses to run.
        high = self.max_value * keep + ops.maximum(ops.max(x), 0.0) * take
        self.max_value.assign(ops.maximum(high, self.min_value + MIN_ACTIVATION_RANGE))
        self.observed.assign(1.0)

    def call(self, inputs, training=None):
        record = _FLOAT_EXPORT.get()
        if record is not None and not training:
            try:  # an eager call: the value this range applies to (a traced one has none to keep)
                record.append((self, ops.convert_to_numpy(inputs)))
            except Exception:
                pass
            return inputs
        if self.value_range is not None:
            return inputs if training else quantize_fixed(inputs, self.value_range)
        if training:
            self.observe(inputs)
        return fake_quant(inputs, self.min_value, self.max_value)

    def value_bounds(self) -> tuple[float, float]:
        """The `(min, max)` this quantizer applies at inference: its fixed range or its learned one."""
        if self.value_range is not None:
            return self.value_range
        return float(self.min_value.numpy()), float(self.max_value.numpy())

    def quantization_params(self) -> tuple[float, int]:
        """`(scale, zero_point)` of the int8 tensor this range gives, nudged as TensorFlow's FakeQuant does."""
        import numpy as np

        if self.value_range is not None:
            low, high = (np.float32(v) for v in self.value_range)
        else:
            low, high = np.float32(self.min_value.numpy()), np.float32(self.max_value.numpy())
        # In float32 like the FakeQuant kernel, whose nudged zero point the converter keeps.
        scale = (high - low) / np.float32(255.0)
        zero_point_from_min = np.float32(0.0) - low / scale
        nudged = min(255.0, max(0.0, float(np.floor(zero_point_from_min + np.float32(0.5)))))
        return float(scale), int(nudged) - 128

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            ema_decay=self.ema_decay,
            value_range=None if self.value_range is None else list(self.value_range),
            nonnegative=self.nonnegative,
        )
        return config
