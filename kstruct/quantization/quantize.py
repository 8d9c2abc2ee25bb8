"""Model-level QAT: `quantize` rewrites a Keras model into its int8 training form."""

from __future__ import annotations

import warnings

import keras
import tflite_export

from kstruct._graph import check_graph_model, copy_compile, fresh_copy
from kstruct.engine.wrappers import declaring_wrappers, strip_declared
from kstruct.quantization.kernel_values import KERNEL_VALUES_ATTRIBUTE, kernel_values
from kstruct.quantization.layers import (
    FloatPassthrough,
    QuantizeActivation,
    QuantizeOutput,
    QuantizeRescaling,
    QuantizeWrapper,
    has_sparse_weights,
    kernel_spec,
    supports_4_bits,
)
from kstruct.engine.layer_selection import LayerSelector, select_layers
from kstruct.quantization.plan import LayerPlan, plan_model
from kstruct.quantization.quantizers import FakeQuant
from kstruct.quantization.report import quantization_report
from kstruct.quantization.scheme import QuantizationScheme, get_scheme


def quantize(
    model: keras.Model,
    scheme: str | QuantizationScheme = "int8",
    preserve_sparsity: bool = True,
    *,
    bits: int = 8,
    layers: LayerSelector = None,
) -> keras.Model:
    """Returns a quantization-aware training copy of `model` that converts to an exact int8 TFLite file.

    Weights are fake-quantized as TFLite stores them (symmetric int8; per output
    channel for convolutions, per tensor for Dense and Conv2DTranspose);
    activations get asymmetric int8 ranges tracked while training and frozen at
    inference. BatchNormalization layers are folded into the Conv/Dense before
    them and ReLU/ReLU6 fused, as the converter does, so the Keras model computes
    what the int8 file computes. Layers kstruct cannot quantize stay in float,
    with a warning that names them; `quantization_report(qat_model)` lists every
    layer and what became of it.

    Args:
        model: a Sequential or functional model (nested ones included); not
            modified. A model still holding pruning wrappers is stripped first.
        scheme: "int8" or a `QuantizationScheme`.
        preserve_sparsity: keep the kernels' zeros (from `kstruct.pruning.strip`)
            exactly zero through training and in the int8 file.
        bits: 4 trains Dense, Conv1D and Conv2D kernels on the 4-bit grid, per output
            channel, for the `int4` target (see `int4_file`); activations stay 8-bit.
        layers: with `bits=4`, which of those layers get 4 bits (a name, a regex, a list,
            or a predicate); the others keep 8-bit kernels: per-layer mixed precision.
            Default: all of them.

    Returns:
        A functional model, compiled like `model` if it was. Train it with `fit`;
        convert it with `tflite_export.convert(qat_model, "int8", ...)`.

    Raises:
        UnsupportedModelError: for subclassed models.

    Example:

    >>> qat = quantize(model)  # doctest: +SKIP
    >>> qat.fit(x, y, epochs=1)  # doctest: +SKIP
    """
    check_graph_model(model, "kstruct.quantization.quantize")
    scheme = get_scheme(scheme)
    if bits not in (8, 4):
        raise ValueError(f"Expected `bits` to be 8 or 4. Received: bits={bits!r}")
    if layers is not None and bits != 4:
        raise ValueError(f"`layers` picks the layers that get 4 bits; pass it with bits=4. Received: layers={layers!r}, bits={bits}")
    model = _without_pruning_wrappers(model)
    # QAT simulates the int8 file, which accumulates in int32 and rescales in float32: a
    # mixed_float16 layer would round every product to float16 first (and TF's fake-quant
    # kernels take float32 only). So the QAT model computes in float32, whatever the policy.
    model = tflite_export.float32_twin(model)
    four_bit = _four_bit_names(model, layers) if bits == 4 else frozenset()
    qat_model = _quantize_graph(model, scheme, bool(preserve_sparsity), quantize_inputs=True, four_bit=four_bit)
    copy_compile(model, qat_model)
    skipped = quantization_report(qat_model).skipped
    if skipped:
        warnings.warn(
            f"kstruct.quantization: {len(skipped)} layer(s) left in float in the QAT model (not simulated in "
            "training; converting, TensorFlow quantizes from the calibration data those LiteRT has an int8 kernel "
            "for, and the file dequantizes around the rest): "
            + "; ".join(f"{entry.name} ({entry.layer_type}: {entry.detail})" for entry in skipped),
            stacklevel=2,
        )
    return qat_model


def _four_bit_names(model: keras.Model, layers: LayerSelector) -> frozenset[str]:
    """Names of the layers (nested models' included) whose kernels train on the 4-bit grid."""
    candidates = [layer for layer in _all_layers(model) if supports_4_bits(layer)]
    return frozenset(layer.name for layer in select_layers(candidates, layers, kind="4-bit capable (Dense, Conv1D, Conv2D)"))


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += _all_layers(layer)
    return found


def _without_pruning_wrappers(model: keras.Model) -> keras.Model:
    """Pruning's wrappers stripped (their masks baked in), read from what each wrapper declares."""
    return strip_declared(model) if declaring_wrappers(model) else model


def _as_functional(model: keras.Model) -> keras.Model:
    """A plain functional model computing what `model` does.

    A Sequential one gets fresh copies of its layers (same weights). A subclass of
    the functional API (keras-hub's backbones) is re-wrapped over the same layers:
    its own config holds its constructor arguments, not the graph.
    """
    if not isinstance(model, keras.Sequential):
        if "layers" in model.get_config():
            return model
        return keras.Model(model.input, model.output, name=model.name)
    clone = keras.models.clone_model(model, clone_function=fresh_copy)  # a live Lambda's function, not its config
    clone.set_weights(model.get_weights())
    for original, copied in zip(model.layers, clone.layers):  # cluster-preserving QAT: keep the declarations
        if hasattr(original, KERNEL_VALUES_ATTRIBUTE):
            setattr(copied, KERNEL_VALUES_ATTRIBUTE, getattr(original, KERNEL_VALUES_ATTRIBUTE))
    source = model.inputs[0]
    inputs = keras.Input(batch_shape=tuple(source.shape), dtype=source.dtype, name=f"{model.name}_input")
    outputs = inputs
    for layer in clone.layers:
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=model.name)


def _has_zeros(layer: keras.layers.Layer, kernel_names) -> bool:
    """Whether any of `layer`'s kernels holds an exact zero.

    Only then is there sparsity to preserve: a kernel without zeros gets no mask,
    which saves a multiply (and its gradient) per kernel on every training step.
    """
    return any(bool((getattr(layer, name).numpy() == 0).any()) for name in kernel_names)


def _quantize_graph(
    model, scheme: QuantizationScheme, preserve_sparsity: bool, quantize_inputs: bool, four_bit: frozenset = frozenset()
) -> keras.Model:
    model = _as_functional(model)
    plans = plan_model(model, fold_batch_norm=scheme.fold_batch_norm)
    layers = {layer.name: layer for layer in model.layers}
    built: dict[str, keras.layers.Layer] = {}
    input_quantized: dict[int, object] = {}
    input_tensors = [
        keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name) for t in keras.tree.flatten(model.inputs)
    ]
    input_ids = {id(t) for t in input_tensors}

    def quantized_input(value):
        if not (quantize_inputs and id(value) in input_ids):
            return value
        if id(value) not in input_quantized:
            quantizer = FakeQuant(ema_decay=scheme.ema_decay, name=f"quant_{value.name}")
            input_quantized[id(value)] = quantizer(value)
        return input_quantized[id(value)]

    def call(operation, *args, **kwargs):
        args, kwargs = keras.tree.map_structure(quantized_input, (args, kwargs))
        # Masks are not part of int8 inference; Keras records `mask=None` on some nodes.
        kwargs = {key: value for key, value in kwargs.items() if not (key == "mask" and value is None)}
        if not isinstance(operation, keras.layers.Layer):
            # A bare Keras op in the graph (`x + 1` on symbolic tensors): left in float.
            quantizer = FakeQuant(ema_decay=scheme.ema_decay, name=f"quant_{operation.name}")
            return quantizer(operation(*args, **kwargs))
        plan = plans.get(operation.name)
        if plan is None:
            return operation(*args, **kwargs)
        if plan.kind == "absorbed":
            return args[0]
        first = operation.name not in built
        if first:
            built[operation.name] = _quantized_layer(operation, plan, layers, scheme, preserve_sparsity, four_bit)
        outputs = built[operation.name](*args, **kwargs)
        if first:
            _copy_weights(operation, built[operation.name], plan, layers)
        return outputs

    return keras.models.clone_model(model, input_tensors=input_tensors if len(input_tensors) > 1 else input_tensors[0],
                                    clone_function=lambda layer: layer, call_function=call)


def _quantized_layer(
    layer, plan: LayerPlan, layers: dict, scheme: QuantizationScheme, preserve_sparsity: bool, four_bit: frozenset
):
    """The new layer `plan` says `layer` becomes: a quantizing wrapper, a fresh copy, or a float passthrough."""
    decay = scheme.ema_decay
    if plan.kind == "weighted":
        batch_norm = fresh_copy(layers[plan.batch_norm]) if plan.batch_norm else None
        activation = fresh_copy(layers[plan.activation]) if plan.activation else None
        kernels = kernel_spec(layer).kernels
        return QuantizeWrapper(
            fresh_copy(layer),
            batch_norm=batch_norm,
            activation=activation,
            quantize_output=plan.quantize_output,
            preserve_sparsity=preserve_sparsity and _has_zeros(layer, kernels),
            ema_decay=decay,
            kernel_values=kernel_values(layer, kernels),
            weight_bits=4 if layer.name in four_bit else 8,
        )
    if plan.kind == "output":
        activation = fresh_copy(layers[plan.activation]) if plan.activation else None
        return QuantizeOutput(fresh_copy(layer), activation=activation, quantize_output=plan.quantize_output, ema_decay=decay)
    if plan.kind == "activation":
        return QuantizeActivation(fresh_copy(layer), ema_decay=decay)
    if plan.kind == "rescaling":
        return QuantizeRescaling(fresh_copy(layer), ema_decay=decay)
    if plan.kind == "same_scale":
        return fresh_copy(layer)
    if plan.kind == "nested":
        return _quantize_graph(layer, scheme, preserve_sparsity, quantize_inputs=False, four_bit=four_bit)
    sparse = preserve_sparsity and has_sparse_weights(layer)
    return FloatPassthrough(fresh_copy(layer), reason=plan.reason, ema_decay=decay, preserve_sparsity=sparse)


def _copy_weights(original, new_layer, plan: LayerPlan, layers: dict) -> None:
    """Fills a just-built new layer from the original (and its folded BatchNorm's) weights."""
    if plan.kind == "weighted":
        new_layer.layer.set_weights(original.get_weights())
        if plan.batch_norm:
            new_layer.batch_norm.set_weights(layers[plan.batch_norm].get_weights())
        if new_layer.preserve_sparsity:
            new_layer.capture_sparsity()
        new_layer.capture_kernel_values()
    elif plan.kind in ("output", "activation", "same_scale", "float", "rescaling"):
        target = new_layer.layer if isinstance(new_layer, keras.layers.Wrapper) else new_layer
        target.set_weights(original.get_weights())
        if hasattr(target, "finalize_state"):  # state derived from weights (Normalization), as Keras's loading does
            target.finalize_state()
