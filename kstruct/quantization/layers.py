"""QAT wrappers: the quantized stand-ins `quantize` puts in place of a model's layers.

Each wrapper owns the extra state (moving ranges, sparsity masks, a folded
BatchNormalization) and never mutates the layer it wraps. Weighted layers run
their own `call` inside a `keras.StatelessScope` that maps each kernel to its
fake-quantized (BN-folded, masked) value, as `PruneWrapper` does for masks;
SeparableConv2D is computed with `keras.ops` because TFLite runs it as two
kernels with an int8 tensor between them.
"""

from __future__ import annotations

import inspect

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import ops

from kstruct.quantization import bn_folding
from kstruct.quantization.activations import FLOAT_ACTIVATION, activation_name, function_name, spec_for
from kstruct.quantization.kernel_values import quantize_clustered, snap
from kstruct.quantization.quantizers import FakeQuant, quantize_weight


def _scale_last(kernel, scale):
    return kernel * scale


def _scale_depthwise(kernel, scale):
    # Depthwise output channel i * multiplier + j comes from kernel[..., i, j].
    return kernel * ops.reshape(scale, tuple(kernel.shape[-2:]))


def _scale_transposed(kernel, scale):
    # Conv2DTranspose kernels are (h, w, out, in).
    return kernel * ops.expand_dims(scale, -1)


def _conv1d_as_conv2d(kernel):
    # The converter lowers Conv1D to EXPAND_DIMS + CONV_2D with a (1, k, in, out)
    # kernel. Fake-quantizing the 3-D kernel per channel leaves a RESHAPE between
    # the quantized weight and the conv whose quantized axis (2 -> 3) it cannot
    # move; quantizing the 4-D kernel lets the weight feed CONV_2D directly.
    return ops.expand_dims(kernel, 0)


def _depthwise_axis(kernel_shape) -> int | None:
    # TFLite quantizes depthwise weights per output channel (in * multiplier); with
    # multiplier 1 that is the input-channel axis of the Keras kernel.
    return 2 if kernel_shape[-1] == 1 else None


@dataclass(frozen=True)
class KernelSpec:
    """How one weighted layer type is quantized.

    Attributes:
        kernels: `{attribute: axis(kernel_shape) -> per-channel axis or None}` for each
            weight that becomes an int8 tensor.
        folded: the kernel a following BatchNormalization scales, and how.
    """

    kernels: dict[str, Callable[[tuple], int | None]]
    folded: str | None
    scale: Callable | None
    as_tflite: Callable | None = None  # the kernel reshaped as TFLite's op holds it
    split_activation: bool = True


def _per_tensor(shape):
    return None


def _last_axis(shape):
    return -1


# Per-channel where TFLite quantizes per channel (convolutions along their output
# channels); per-tensor for FULLY_CONNECTED and TRANSPOSE_CONV, where per-channel
# FakeQuant fails conversion ("mismatched quantized axes").
WEIGHTED_LAYERS: dict[type, KernelSpec] = {
    keras.layers.Conv1D: KernelSpec({"kernel": _last_axis}, "kernel", _scale_last, as_tflite=_conv1d_as_conv2d),
    keras.layers.Conv2D: KernelSpec({"kernel": _last_axis}, "kernel", _scale_last),
    keras.layers.DepthwiseConv2D: KernelSpec({"kernel": _depthwise_axis}, "kernel", _scale_depthwise),
    keras.layers.SeparableConv2D: KernelSpec(
        {"depthwise_kernel": _depthwise_axis, "pointwise_kernel": _last_axis}, "pointwise_kernel", _scale_last
    ),
    keras.layers.Conv2DTranspose: KernelSpec({"kernel": _per_tensor}, "kernel", _scale_transposed),
    keras.layers.Dense: KernelSpec({"kernel": _per_tensor}, "kernel", _scale_last),
}


# Layers whose kernels may train on the 4-bit grid: the ones LiteRT runs with int4 weights and int8
# activations (FULLY_CONNECTED, CONV_2D; Conv1D converts to CONV_2D), per output channel.
FOUR_BIT_LAYERS: tuple[type, ...] = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)

DECLARATION = "kstruct_quantize"


def declared_spec(layer: keras.layers.Layer) -> KernelSpec | None:
    """The spec a custom layer declares with a `kstruct_quantize` attribute, or None.

    A layer whose math TFLite runs in int8 (a matmul, a scaling, a weightless op)
    says so, and which weights become int8 tensors:

        class Scale(keras.layers.Layer):
            kstruct_quantize = {"scale": None}  # weight attribute -> per-channel axis, or None

    QAT then fake-quantizes those weights (symmetric int8) and the layer's output
    (a learned range), and calls the layer unchanged otherwise; `{}` declares a
    weightless int8 op. Layers without the attribute run in float with a warning.
    """
    declared = getattr(layer, DECLARATION, None)
    if declared is None:
        return None
    if not isinstance(declared, dict) or not all(
        isinstance(name, str) and (axis is None or isinstance(axis, int)) for name, axis in declared.items()
    ):
        raise TypeError(
            f"Expected `{DECLARATION}` on layer `{layer.name}` to be a dict of weight attribute -> per-channel axis "
            f"(an int, or None for per-tensor), e.g. {{'kernel': -1}}. Received: {declared!r}"
        )
    kernels = {name: (lambda shape, axis=axis: axis) for name, axis in declared.items()}
    return KernelSpec(kernels, folded=None, scale=None, split_activation=False)


def supports_4_bits(layer: keras.layers.Layer) -> bool:
    """Whether `layer`'s kernel can be a 4-bit tensor in the int4 file (exact types: not Conv2DTranspose)."""
    return type(layer) in FOUR_BIT_LAYERS


def kernel_spec(layer: keras.layers.Layer) -> KernelSpec | None:
    """The quantization spec of a weighted layer type, or None if kstruct does not quantize it."""
    # Exact types first: Conv1D/Conv2D subclasses such as Conv2DTranspose must not match Conv2D.
    spec = WEIGHTED_LAYERS.get(type(layer))
    if spec is not None:
        return spec
    declared = declared_spec(layer)
    if declared is not None:
        return declared
    for layer_type, candidate in WEIGHTED_LAYERS.items():
        if isinstance(layer, layer_type):
            return candidate
    return None


def _conv1d(layer, inputs, kernel):
    """A channels-last Conv1D computed as the CONV_2D TFLite runs it (height 1)."""
    if len(kernel.shape) == 3:
        kernel = _conv1d_as_conv2d(kernel)
    padding = layer.padding
    if padding == "causal":
        inputs = ops.pad(inputs, [[0, 0], [layer.dilation_rate[0] * (layer.kernel_size[0] - 1), 0], [0, 0]])
        padding = "valid"
    outputs = ops.conv(
        ops.expand_dims(inputs, 1),
        kernel,
        strides=(1, layer.strides[0]),
        padding=padding,
        data_format="channels_last",
        dilation_rate=(1, layer.dilation_rate[0]),
    )
    return ops.squeeze(outputs, 1)


def _serialize(layer):
    return None if layer is None else keras.layers.serialize(layer)


def _deserialize(config, custom_objects=None):
    return None if config is None else keras.layers.deserialize(config, custom_objects=custom_objects)


class _Wrapper(keras.layers.Wrapper):
    """What every QAT wrapper shares: a default name, `ema_decay`, and a config that round-trips.

    Subclasses list their constructor arguments: `_sublayer_args` (layers, saved as
    nested configs) and `_config_args` (plain values); `get_config`/`from_config`
    are written once, here.
    """

    _prefix = "quant_"
    _sublayer_args: tuple[str, ...] = ()
    _config_args: tuple[str, ...] = ("ema_decay",)

    def __init__(self, layer, ema_decay: float = 0.99, **kwargs):
        kwargs.setdefault("name", f"{self._prefix}{layer.name}")
        kwargs.setdefault("dtype", "float32")  # int8 simulation is float32 under any global policy (quantize.py)
        super().__init__(layer, **kwargs)
        self.ema_decay = float(ema_decay)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({name: _serialize(getattr(self, name)) for name in self._sublayer_args})
        config.update({name: getattr(self, name) for name in self._config_args})
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        sublayers = {name: _deserialize(config.pop(name), custom_objects) for name in cls._sublayer_args}
        return cls(layer, **sublayers, **config)


class _ActivationStage(_Wrapper):
    """The activation after a wrapper's main op and its quantizers (shared by the wrappers).

    Builds the wrapped layer and every quantizer, so that loading a saved model finds
    every variable.
    """

    def _init_activation(self, activation, quantize_output: bool, ema_decay: float):
        name = "linear" if activation is None else activation_name(activation)
        spec = spec_for(name)
        # An activation int8 does not run stays in float between the layer's int8
        # output and a quantized copy of its own output (DEQUANTIZE, op, QUANTIZE).
        self.float_activation = spec is None
        if spec is None:
            spec = FLOAT_ACTIVATION
            name = name or getattr(getattr(activation, "activation", None), "__name__", type(activation).__name__)
        self.activation = activation
        self.activation_kind = name
        self._activation_spec = spec
        self.quantize_output = bool(quantize_output)
        # A fused ReLU/ReLU6 comes before the output quantizer, so its input is never negative.
        self.output_quantizer = FakeQuant(
            ema_decay=ema_decay, nonnegative=spec.fusable and spec.nonnegative, name="output_quantizer"
        )
        self.activation_quantizer = None
        if not spec.fusable:
            self.activation_quantizer = FakeQuant(
                ema_decay=ema_decay, value_range=spec.output_range, name="activation_quantizer"
            )

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        for quantizer in (self.output_quantizer, self.activation_quantizer, getattr(self, "intermediate_quantizer", None)):
            if quantizer is not None and not quantizer.built:
                quantizer.build()
        self.built = True

    def compute_output_shape(self, input_shape):
        try:
            return self.layer.compute_output_shape(input_shape)
        except NotImplementedError:  # a declared custom layer without one: trace its call
            return self.layer.compute_output_spec(keras.KerasTensor(input_shape)).shape

    def _activate(self, outputs, training):
        spec = self._activation_spec
        if spec.fusable:
            if self.activation is not None:
                outputs = self.activation(outputs)
            if not self.quantize_output:
                return outputs
            return self.output_quantizer(outputs, training=training)
        outputs = self.output_quantizer(outputs, training=training)
        outputs = spec.function(outputs, training) if spec.function is not None else self.activation(outputs)
        return self.activation_quantizer(outputs, training=training)


@keras.saving.register_keras_serializable(package="kstruct")
class QuantizeWrapper(_ActivationStage):
    """Trains a Conv/Dense layer with int8 fake-quantized weights and output.

    Args:
        layer: a Dense, Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D or
            Conv2DTranspose layer (channels-last). Its own activation, if any,
            moves to `activation`.
        batch_norm: a BatchNormalization to fold into the layer (see `bn_folding`).
        activation: an activation layer applied after the layer (and the folded
            BN): ReLU/ReLU6 are fused before the output is quantized, others get
            their own quantized input and output, as TFLite runs them.
        quantize_output: False when the consumer quantizes this tensor instead
            (a Concatenate, whose inputs share its scale in TFLite).
        preserve_sparsity: keep the kernels' zeros (from pruning) exactly zero.
        ema_decay: decay of the moving activation ranges.
        kernel_values: `{kernel name: {"values": ..., "axis": ...}}`, the values a
            kernel may take (declared by clustering); see `kstruct.quantization.kernel_values`.
        weight_bits: 8, or 4 for a Dense/Conv1D/Conv2D kernel fake-quantized per output
            channel on the 4-bit grid (the `int4` target's kernels).
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        batch_norm: keras.layers.Layer | None = None,
        activation: keras.layers.Layer | None = None,
        quantize_output: bool = True,
        preserve_sparsity: bool = True,
        ema_decay: float = 0.99,
        kernel_values: dict | None = None,
        weight_bits: int = 8,
        **kwargs,
    ):
        spec = kernel_spec(layer)
        if spec is None:
            raise TypeError(
                "Expected a Dense, Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D or Conv2DTranspose layer, "
                f"or one with a `{DECLARATION}` declaration. Received: layer `{layer.name}` of type {type(layer).__name__}"
            )
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"Expected a channels_last layer. Received: layer `{layer.name}` with data_format={layer.data_format!r}")
        own = function_name(layer.activation) if spec.split_activation and hasattr(layer, "activation") else "linear"
        if own != "linear":
            if activation is not None:
                raise ValueError(f"Layer `{layer.name}` has activation {own!r}; pass `activation` only for a linear layer.")
            activation = keras.layers.Activation(layer.activation, name=f"{layer.name}_activation", dtype="float32")
            config = layer.get_config()
            config["activation"] = "linear"
            layer = layer.__class__.from_config(config)
        if batch_norm is not None and not isinstance(batch_norm, keras.layers.BatchNormalization):
            raise TypeError(f"Expected `batch_norm` to be a BatchNormalization. Received: {type(batch_norm).__name__}")
        if weight_bits not in (8, 4) or (weight_bits == 4 and not supports_4_bits(layer)):
            raise ValueError(
                "Expected `weight_bits` 8, or 4 for a Dense, Conv1D or Conv2D layer. Received: "
                f"weight_bits={weight_bits!r} for layer `{layer.name}` of type {type(layer).__name__}"
            )
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        self._spec = spec
        self.weight_bits = int(weight_bits)
        self.batch_norm = batch_norm
        self.preserve_sparsity = bool(preserve_sparsity)
        self.kernel_values = dict(kernel_values or {})  # cluster-preserving QAT
        self._init_activation(activation, quantize_output, ema_decay)
        self.intermediate_quantizer = None
        if isinstance(layer, keras.layers.SeparableConv2D):
            self.intermediate_quantizer = FakeQuant(ema_decay=ema_decay, name="intermediate_quantizer")

    _sublayer_args = ("batch_norm", "activation")
    _config_args = ("quantize_output", "preserve_sparsity", "ema_decay", "kernel_values", "weight_bits")

    def build(self, input_shape=None):
        super().build(input_shape)
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(self.layer.compute_output_shape(input_shape))
        # Cluster-preserving QAT: the declared values train as centroids (a declared zero,
        # which pruned weights hold, stays zero); the snapped kernels are what inference
        # (and the TFLite file) uses.
        self.kernel_value_weights = {
            name: self.add_weight(
                name=f"{name}_values",
                shape=np.shape(self.kernel_values[name]["values"]),
                initializer=keras.initializers.Constant(self._declared_values(name)),
                trainable=True,
                aggregation="none",  # trained like any weight: the optimizer updates every replica's copy alike
            )
            for name in self._spec.kernels
            if name in self.kernel_values
        }
        self.snapped_kernels = {
            name: self.add_weight(
                name=f"{name}_snapped", shape=getattr(self.layer, name).shape, initializer="zeros", trainable=False,
                aggregation="none",  # recomputed each step from mirrored weights: the same on every replica
            )
            for name in self._spec.kernels
            if name in self.kernel_values
        }
        # A 4-bit clustered kernel on its grid, each value of a channel on a level of its own
        # (`quantize_clustered`), kept as a variable like the snapped kernel: the converter
        # cannot fold those ops either.
        reshape = self._spec.as_tflite or (lambda kernel: kernel)
        self.clustered_kernels = {
            name: self.add_weight(
                name=f"{name}_clustered", shape=tuple(reshape(keras.KerasTensor(getattr(self.layer, name).shape)).shape),
                initializer="zeros", trainable=False,
                aggregation="none",  # as the snapped kernel: recomputed each step, the same on every replica
            )
            for name in self.snapped_kernels
            if self.weight_bits == 4 and self._channel_last(name)
        }
        self.sparsity_masks = {}
        if self.preserve_sparsity:
            for name in self._spec.kernels:
                kernel = getattr(self.layer, name)
                self.sparsity_masks[name] = self.add_weight(
                    name=f"{name}_mask", shape=kernel.shape, initializer="ones", trainable=False,
                    aggregation="none",  # set by `capture_sparsity` outside training steps, on every copy at once
                )
        self.built = True

    def capture_sparsity(self) -> None:
        """Sets the masks from the kernels' current zeros, which then stay zero."""
        for name, mask in self.sparsity_masks.items():
            kernel = ops.convert_to_tensor(getattr(self.layer, name))
            mask.assign(ops.cast(ops.not_equal(kernel, 0.0), mask.dtype))

    def capture_kernel_values(self) -> None:
        """Snaps the kernels to their declared values (cluster-preserving QAT) for inference."""
        for name, snapped in self.snapped_kernels.items():
            snapped.assign(self._snapped(name, ops.convert_to_tensor(getattr(self.layer, name))))
        if self.clustered_kernels:
            scale = None if self.batch_norm is None else bn_folding.folded_scale(self.batch_norm)
            self._quantize(self._kernels(scale), scale, training=True)  # assigns them

    def _channel_last(self, name: str) -> bool:
        """Whether kernel `name`'s declared values are per tensor or per its last axis (the 4-bit channel axis)."""
        axis = self.kernel_values[name]["axis"]
        rank = len(getattr(self.layer, name).shape)
        return axis is None or axis % rank == rank - 1

    def _declared_values(self, name: str) -> np.ndarray:
        """The values declared for kernel `name`, sorted along their last axis: the layout of their trainable copy."""
        return np.sort(np.asarray(self.kernel_values[name]["values"], "float32"), axis=-1)

    def _values(self, name: str):
        """The trained values of kernel `name` (a declared zero stays zero)."""
        return ops.where(self._declared_values(name) == 0.0, 0.0, ops.convert_to_tensor(self.kernel_value_weights[name]))

    def _snapped(self, name: str, kernel):
        return snap(kernel, self._values(name), self.kernel_values[name]["axis"])

    @property
    def quantized_kernels(self) -> dict[str, int | None]:
        """`{kernel attribute: per-channel axis, or None for per-tensor}`; 4-bit kernels: per output channel."""
        if self.weight_bits == 4:
            return {name: -1 for name in self._spec.kernels}
        return {name: axis(tuple(getattr(self.layer, name).shape)) for name, axis in self._spec.kernels.items()}

    def _bias(self):
        return ops.convert_to_tensor(self.layer.bias) if getattr(self.layer, "use_bias", False) else None

    def _kernels(self, scale=None, training=False) -> dict:
        kernels = {}
        for name in self._spec.kernels:
            kernel = ops.convert_to_tensor(getattr(self.layer, name))
            if name in self.snapped_kernels:  # cluster-preserving QAT: snap before the mask and the BN fold
                if training:  # kept as a variable: the converter cannot fold the snapping ops
                    kernel = self._snapped(name, kernel)
                    self.snapped_kernels[name].assign(ops.stop_gradient(kernel))
                else:
                    kernel = ops.convert_to_tensor(self.snapped_kernels[name])
            if name in self.sparsity_masks:
                kernel = kernel * self.sparsity_masks[name]
            if scale is not None and name == self._spec.folded:
                kernel = self._spec.scale(kernel, scale)
            kernels[name] = kernel
        return kernels

    def _quantize(self, kernels: dict, scale=None, training=False) -> dict:
        """The kernels fake-quantized; `scale` is the folded BatchNorm's per-channel factor (None: no fold)."""
        axes = self.quantized_kernels
        reshape = self._spec.as_tflite or (lambda kernel: kernel)
        quantized = {}
        for name, kernel in kernels.items():
            if name in self.clustered_kernels:  # a 4-bit clustered kernel: no two of its values share a level
                if training:
                    folded = scale if name == self._spec.folded else None
                    table = ops.sort(self._values(name), axis=-1)
                    exact = quantize_clustered(reshape(kernel), table, folded, bits=self.weight_bits)
                    self.clustered_kernels[name].assign(exact)
                    quantized[name] = reshape(kernel) + ops.stop_gradient(exact - reshape(kernel))  # straight through
                else:
                    quantized[name] = ops.convert_to_tensor(self.clustered_kernels[name])
            else:
                quantized[name] = quantize_weight(reshape(kernel), axes[name], bits=self.weight_bits)
        return quantized

    def folded_weights(self) -> tuple[dict, object]:
        """The float kernels and bias TFLite's int8 kernel is quantized from (BN folded, masks applied)."""
        if self.batch_norm is None:
            return self._kernels(), self._bias()
        return self._kernels(bn_folding.folded_scale(self.batch_norm)), bn_folding.folded_bias(self.batch_norm, self._bias())

    def quantized_weights(self) -> tuple[dict, object]:
        """The fake-quantized kernels (and float bias) the layer computes with at inference."""
        kernels, bias = self.folded_weights()
        return self._quantize(kernels, None if self.batch_norm is None else bn_folding.folded_scale(self.batch_norm)), bias

    def _linear(self, inputs, kernels: dict, bias, training, quantize_intermediate: bool = True):
        layer = self.layer
        if isinstance(layer, keras.layers.SeparableConv2D):
            hidden = ops.depthwise_conv(
                inputs,
                kernels["depthwise_kernel"],
                strides=layer.strides,
                padding=layer.padding,
                data_format="channels_last",
                dilation_rate=layer.dilation_rate,
            )
            if quantize_intermediate:
                hidden = self.intermediate_quantizer(hidden, training=training)
            outputs = ops.conv(hidden, kernels["pointwise_kernel"], strides=1, padding="valid", data_format="channels_last")
            return outputs if bias is None else outputs + bias
        if isinstance(layer, keras.layers.Conv1D):
            outputs = _conv1d(layer, inputs, kernels["kernel"])
            return outputs if bias is None else outputs + bias
        replaced = {id(getattr(layer, name)): value for name, value in kernels.items()}
        has_bias = getattr(layer, "use_bias", False)
        if has_bias:
            replaced[id(layer.bias)] = bias if bias is not None else ops.zeros(layer.bias.shape)
        mapping = [(v, replaced.get(id(v), v.value)) for v in layer.variables]
        with keras.StatelessScope(state_mapping=mapping):
            outputs = layer(inputs)
        if bias is not None and not has_bias:
            outputs = outputs + bias
        return outputs

    def call(self, inputs, training=None):
        bn = self.batch_norm
        bias = self._bias()
        if bn is None:
            outputs = self._linear(inputs, self._quantize(self._kernels(training=training), training=training), bias, training)
        elif training and bn.trainable:
            float_outputs = self._linear(inputs, self._kernels(training=training), bias, training, quantize_intermediate=False)
            mean, variance = bn_folding.batch_statistics(float_outputs)
            bn_folding.update_moving_statistics(bn, mean, variance)
            scale = bn_folding.folded_scale(bn)
            kernels = self._quantize(self._kernels(scale, training=training), scale, training=training)
            factor, shift = bn_folding.training_correction(bn, mean, variance, bias)
            outputs = self._linear(inputs, kernels, None, training) * factor + shift
        else:
            scale = bn_folding.folded_scale(bn)
            kernels = self._quantize(self._kernels(scale), scale, training=training)
            outputs = self._linear(inputs, kernels, bn_folding.folded_bias(bn, bias), training)
        return self._activate(outputs, training)


@keras.saving.register_keras_serializable(package="kstruct")
class QuantizeOutput(_ActivationStage):
    """Runs a weightless layer (Add, Multiply, Concatenate, GlobalAveragePooling, ...) and quantizes its output.

    Args:
        layer: the layer; its inputs are int8 tensors already.
        activation: a ReLU/ReLU6 fused after it (TFLite fuses them into ADD, MUL, ...).
        quantize_output: False when the consumer quantizes this tensor instead.
        ema_decay: decay of the moving output range.
    """

    _sublayer_args = ("activation",)
    _config_args = ("quantize_output", "ema_decay")

    def __init__(self, layer, activation=None, quantize_output: bool = True, ema_decay: float = 0.99, **kwargs):
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        self._init_activation(activation, quantize_output, ema_decay)
        if not self._activation_spec.fusable:
            raise ValueError(f"Expected a fusable activation (linear, relu, relu6). Received: {self.activation_kind!r}")

    def call(self, inputs, training=None, **kwargs):
        return self._activate(self.layer(inputs, **kwargs), training)


@keras.saving.register_keras_serializable(package="kstruct")
class QuantizeActivation(_ActivationStage):
    """An activation layer on its own int8 kernel: its output quantized (over a fixed range where TFLite fixes it).

    Args:
        layer: ReLU, LeakyReLU, Softmax or Activation with a supported function
            (relu, relu6, sigmoid, softmax, tanh, hard_silu, silu, leaky_relu).
        ema_decay: decay of the moving output range.
    """

    def __init__(self, layer, ema_decay: float = 0.99, **kwargs):
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        self._init_activation(layer, True, ema_decay)

    def call(self, inputs, training=None):
        spec = self._activation_spec
        outputs = spec.function(inputs, training) if spec.function is not None else self.layer(inputs)
        quantizer = self.output_quantizer if spec.fusable else self.activation_quantizer
        return quantizer(outputs, training=training)


@keras.saving.register_keras_serializable(package="kstruct")
class QuantizeRescaling(_Wrapper):
    """A `Rescaling` on images as TFLite can run it in int8: a 1x1 depthwise convolution.

    TFLite has no int8 kernel for a float constant multiply-add, so the scale
    becomes per-channel int8 weights and the offset an int32 bias.
    """

    def __init__(self, layer, ema_decay: float = 0.99, **kwargs):
        if not isinstance(layer, keras.layers.Rescaling):
            raise TypeError(f"Expected a Rescaling layer. Received: {type(layer).__name__}")
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        self.output_quantizer = FakeQuant(ema_decay=ema_decay, name="output_quantizer")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Expected an image input (rank 4) for a quantized Rescaling. Received: shape {input_shape}")
        self.channels = int(input_shape[-1])
        self.output_quantizer.build()
        self.built = True

    def _affine(self):
        channels = self.channels
        scale = ops.broadcast_to(ops.reshape(ops.convert_to_tensor(self.layer.scale, "float32"), (-1,)), (channels,))
        offset = ops.broadcast_to(ops.reshape(ops.convert_to_tensor(self.layer.offset, "float32"), (-1,)), (channels,))
        return ops.reshape(scale, (1, 1, channels, 1)), offset

    def call(self, inputs, training=None):
        kernel, offset = self._affine()
        outputs = ops.depthwise_conv(ops.cast(inputs, "float32"), quantize_weight(kernel, 2), strides=1, padding="valid")
        return self.output_quantizer(outputs + offset, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape


def _builds_from_one_shape(layer: keras.layers.Layer) -> bool:
    parameters = inspect.signature(layer.build).parameters.values()
    required = [p for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1


@keras.saving.register_keras_serializable(package="kstruct")
class FloatPassthrough(_Wrapper):
    """A layer kstruct cannot quantize, left in float; its output is quantized for the int8 layers after it.

    Any layer fits: several inputs (MultiHeadAttention's query and value), its own
    keyword arguments, no `compute_output_shape` (a user's custom layer): the call
    is forwarded as made, and the layer builds itself on it.

    A pruned layer left in float (a grouped convolution, Conv3D, a recurrent layer)
    keeps its zeros, as `QuantizeWrapper` does, with `preserve_sparsity`: each
    of its kernels (see `sparse_kernels`) runs as `w * stop_gradient(w != 0)`. That
    is `w` itself, but a zero weight gets no gradient, so no optimizer step moves
    it (Adam, SGD, RMSprop and weight decay all leave a weight with zero gradient
    and zero moments where it is), and the int8 file holds it as zero. No mask
    variable is needed: which weights are zero is read from the weights, which a
    layer left in float may only create on its first call.

    Args:
        layer: the layer, run as is.
        reason: why it is not quantized (shown in the quantization report).
        ema_decay: decay of the moving output range.
        preserve_sparsity: keep the exact zeros of its kernels zero.
    """

    _prefix = "float_"
    _config_args = ("reason", "ema_decay", "preserve_sparsity")

    def __init__(self, layer, reason: str = "", ema_decay: float = 0.99, preserve_sparsity: bool = False, **kwargs):
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        self.reason = str(reason)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.output_quantizer = FakeQuant(ema_decay=ema_decay, name="output_quantizer")

    def __call__(self, *args, **kwargs):
        # A layer built from one input shape is built here, outside the symbolic call:
        # built inside it, state computed in `build` (Normalization's mean and variance,
        # adapted or given as constants) would be a tensor of Keras's scratch graph (a
        # tracer on JAX), out of scope once training runs. Keras cannot pass `build` a shape
        # through this wrapper's `call(*args, **kwargs)`, so it is read from the input here.
        # Others (MultiHeadAttention needs every input's shape) build on their first call.
        if not self.layer.built and len(args) == 1 and not kwargs and _builds_from_one_shape(self.layer):
            shape = getattr(args[0], "shape", None)
            if shape is not None:
                with keras.name_scope(self.name, caller=self):  # its weights' paths, as when built in the call
                    self.layer.build(tuple(shape))
        return super().__call__(*args, **kwargs)

    def build(self, input_shape=None):
        if not self.layer.built and input_shape is not None and _builds_from_one_shape(self.layer):
            self.layer.build(input_shape)
        self.output_quantizer.build()
        self.built = True

    def _sparse_call(self, *args, **kwargs):
        """The layer's own call with each kernel's zeros cut off from the gradient (see the class)."""
        matrices = {id(v) for v in sparse_kernels(self.layer)}
        mapping = []
        for variable in self.layer.variables:
            value = variable.value
            if id(variable) in matrices:
                value = value * ops.stop_gradient(ops.cast(ops.not_equal(value, 0), value.dtype))
            mapping.append((variable, value))  # every variable mapped: nested stateless scopes (JAX) see the trainer's
        with keras.StatelessScope(state_mapping=mapping) as scope:
            current = {id(v): scope.get_current_value(v) for v in self.layer.variables}
            outputs = self.layer(*args, **kwargs)
        # State the layer updates as it runs (moving statistics) only went to the scope: write it back.
        for variable in self.layer.variables:
            value = scope.get_current_value(variable)
            if value is not current[id(variable)]:
                variable.assign(value)
        return outputs

    def call(self, *args, **kwargs):
        # Unbuilt (a layer that builds on its first call) it has no weights to keep sparse yet.
        sparse = self.preserve_sparsity and self.layer.built
        outputs = self._sparse_call(*args, **kwargs) if sparse else self.layer(*args, **kwargs)
        # One float tensor gets an int8 range; several outputs, or integer ones, stay as they are.
        if hasattr(outputs, "dtype") and keras.backend.is_float_dtype(outputs.dtype):
            return self.output_quantizer(outputs)
        return outputs


def sparse_kernels(layer: keras.layers.Layer) -> list:
    """The weights of `layer` (nested ones included) whose zeros `FloatPassthrough` keeps: its trainable kernels.

    Keras names a layer's weight matrices `kernel` (`recurrent_kernel`,
    `depthwise_kernel`, ...): those are what pruning zeroes. Biases are left
    free even when rank 2 (GRU's) and zero-initialized.
    """
    return [v for v in layer.trainable_variables if "kernel" in v.name and len(v.shape) >= 2]


def has_sparse_weights(layer: keras.layers.Layer) -> bool:
    """Whether a kernel of `layer` (see `sparse_kernels`) holds an exact zero: sparsity to keep."""
    return layer.built and any(bool(np.any(keras.ops.convert_to_numpy(v) == 0)) for v in sparse_kernels(layer))
