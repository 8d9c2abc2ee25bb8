"""What each layer of a functional model becomes under int8 QAT, decided from the graph.

The graph comes from kstruct's graph core (`kstruct._graph`): who consumes each
layer's output decides what can be fused. A
BatchNormalization or ReLU that is the only consumer of a Conv is folded into
it; a tensor whose only consumer is a Concatenate takes the Concatenate's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from kstruct import _graph
from kstruct.quantization import bn_folding
from kstruct.quantization.activations import activation_name, function_name, spec_for
from kstruct.quantization.layers import kernel_spec

# Layers TFLite runs in int8 with the scale of their input: nothing to quantize.
SAME_SCALE_LAYERS: tuple[type, ...] = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
    keras.layers.Permute,
)

# Data augmentation inside the model, as Keras's image tutorials write it: active in training, the identity
# otherwise, so the converter drops it. Left in float, each cost the int8 file a DEQUANTIZE and a QUANTIZE
# around nothing, and the user a warning about float layers the file does not hold. (Not RandomCrop: it
# resizes and crops at inference.)
AUGMENTATION_LAYERS: tuple[type, ...] = (
    keras.layers.RandomFlip,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
    keras.layers.RandomTranslation,
    keras.layers.RandomContrast,
    keras.layers.RandomBrightness,
    keras.layers.RandomGrayscale,
    keras.layers.RandomHue,
    keras.layers.RandomSaturation,
    keras.layers.RandomSharpness,
    keras.layers.RandomShear,
    keras.layers.RandomColorJitter,
    keras.layers.RandomColorDegeneration,
    keras.layers.RandomPosterization,
    keras.layers.RandomInvert,
    keras.layers.RandomErasing,
    keras.layers.RandomGaussianBlur,
    keras.layers.RandomPerspective,
    keras.layers.RandomElasticTransform,
    keras.layers.Solarization,
    keras.layers.AugMix,
    keras.layers.RandAugment,
    keras.layers.CutMix,
    keras.layers.MixUp,
    keras.layers.AlphaDropout,
)

# Weightless layers with an int8 kernel whose output gets its own range.
OUTPUT_QUANTIZED_LAYERS: tuple[type, ...] = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
)

# Producers whose int8 kernel takes any output scale, so they can adopt a Concatenate's.
_DEFERRABLE = ("weighted", "output")


@dataclass
class LayerPlan:
    """What one layer becomes.

    Attributes:
        kind: "weighted" (QuantizeWrapper), "output" (QuantizeOutput), "activation"
            (QuantizeActivation), "rescaling", "same_scale" (copied as is), "absorbed"
            (folded into `into`), "nested" (a sub-model, quantized the same way),
            "float" (left in float with `reason`).
        batch_norm: name of the BatchNormalization folded into a weighted layer.
        activation: name of the activation layer fused into it.
        quantize_output: False when a Concatenate quantizes this output instead.
    """

    kind: str
    batch_norm: str | None = None
    activation: str | None = None
    quantize_output: bool = True
    into: str | None = None
    reason: str = ""


@dataclass
class Graph:
    """Node order, call counts and consumers of a functional model, raw ops included."""

    order: list[str]
    calls: dict[str, int]
    consumers: dict[str, list[str]]
    raw_ops: set[str]

    @classmethod
    def of(cls, model: keras.Model) -> "Graph":
        graph = _graph.parse(model, shapes=False)
        return cls(
            [node.name for node in graph.nodes],
            {node.name: len(node.calls) for node in graph.nodes},
            graph.layer_consumers(),
            {node.name for node in graph.nodes if not node.is_layer},
        )

    def sole_consumer(self, name: str) -> str | None:
        consumers = self.consumers.get(name, [])
        if len(consumers) == 1 and consumers[0] != _graph.OUTPUT and self.calls.get(consumers[0]) == 1:
            return consumers[0]
        return None


def _rank(layer: keras.layers.Layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called, or called several times (shared)
        return None


def _fusable_activation(layer) -> bool:
    spec = spec_for(activation_name(layer))
    return spec is not None and spec.fusable


def plan_model(model: keras.Model, fold_batch_norm: bool = True) -> dict[str, LayerPlan]:
    """Decides, for each layer of a functional `model`, what it becomes in the QAT model."""
    graph = Graph.of(model)
    layers = {layer.name: layer for layer in model.layers}
    plans: dict[str, LayerPlan] = {}

    for name in graph.order:
        if name in graph.raw_ops:
            # `x + y`, `keras.ops.*` on symbolic tensors: no layer to wrap; quantize runs it in float.
            plans[name] = LayerPlan("float", reason="a Keras op in the graph, not a layer")
            continue
        layer = layers.get(name)
        if name in plans or layer is None or isinstance(layer, keras.layers.InputLayer):
            continue
        shared = graph.calls.get(name, 0) > 1
        if kernel_spec(layer) is not None and kernel_spec(layer).folded is None:
            # A custom layer declaring its int8 weights: its own output range, nothing folded into it.
            plans[name] = LayerPlan("weighted", quantize_output=not _feeds_concatenate(graph, layers, name))
            continue
        if kernel_spec(layer) is not None:
            if getattr(layer, "data_format", "channels_last") != "channels_last":
                plans[name] = LayerPlan("float", reason="channels_first layers are not quantized; use channels_last")
                continue
            if getattr(layer, "groups", 1) != 1:
                plans[name] = LayerPlan("float", reason=f"grouped convolution (groups={layer.groups})")
                continue
            plan = LayerPlan("weighted")
            tail = name
            linear = function_name(layer.activation) == "linear"
            nxt = None if shared else graph.sole_consumer(tail)
            if linear and fold_batch_norm and nxt is not None and isinstance(layers.get(nxt), keras.layers.BatchNormalization):
                rank = _rank(layer)
                if rank is not None and bn_folding.can_fold(layers[nxt], rank) is None:
                    plan.batch_norm = nxt
                    plans[nxt] = LayerPlan("absorbed", into=name)
                    tail = nxt
                    nxt = graph.sole_consumer(tail)
            if linear and nxt is not None and _fusable_activation(layers.get(nxt)):
                plan.activation = nxt
                plans[nxt] = LayerPlan("absorbed", into=name)
                tail = nxt
            plan.quantize_output = not _feeds_concatenate(graph, layers, tail)
            plans[name] = plan
        elif isinstance(layer, OUTPUT_QUANTIZED_LAYERS):
            plan = LayerPlan("output")
            nxt = None if shared else graph.sole_consumer(name)
            tail = name
            if nxt is not None and _fusable_activation(layers.get(nxt)):
                plan.activation = nxt
                plans[nxt] = LayerPlan("absorbed", into=name)
                tail = nxt
            plan.quantize_output = not _feeds_concatenate(graph, layers, tail)
            plans[name] = plan
        elif activation_name(layer) is not None and spec_for(activation_name(layer)) is not None:
            plans[name] = LayerPlan("activation")
        elif isinstance(layer, SAME_SCALE_LAYERS + AUGMENTATION_LAYERS):
            plans[name] = LayerPlan("same_scale")
        elif isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest":
            plans[name] = LayerPlan("same_scale")
        elif isinstance(layer, keras.layers.Rescaling):
            if _rank(layer) == 4:
                plans[name] = LayerPlan("rescaling")
            else:
                plans[name] = LayerPlan("float", reason="Rescaling is quantized on images (rank 4) only")
        elif isinstance(layer, keras.Model):
            plans[name] = LayerPlan("nested")
        else:
            plans[name] = LayerPlan("float", reason=_unsupported_reason(layer, fold_batch_norm))
    return plans


def _feeds_concatenate(graph: Graph, layers: dict, name: str) -> bool:
    consumer = graph.sole_consumer(name)
    return consumer is not None and isinstance(layers.get(consumer), keras.layers.Concatenate)


def _unsupported_reason(layer, fold_batch_norm: bool) -> str:
    if isinstance(layer, keras.layers.BatchNormalization):
        if not fold_batch_norm:
            return "BatchNormalization folding is off in this scheme"
        return "BatchNormalization not directly after a Conv/Dense layer it could be folded into"
    if activation_name(layer) is not None:
        return f"activation {activation_name(layer)!r} is not int8-native: QAT keeps it in float"
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation, keras.layers.Softmax)):
        return "activation with settings kstruct does not quantize"
    if not isinstance(layer, keras.layers.Layer):
        return "a Keras op in the graph, not a layer"
    if type(layer).__module__.split(".")[0] != "keras":
        return (
            f"custom layer {type(layer).__name__} runs in float; to quantize it, declare its int8 weights "
            "with a `kstruct_quantize` attribute (see kstruct.quantization.declared_spec)"
        )
    return f"{type(layer).__name__} is not supported by int8 QAT"
