"""The `qat` and `ptq` strategy steps: int8 by training with fake quantization, or by calibration."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kstruct.errors import StrategyError
from kstruct.quantization.float_speed import float_speedups
from kstruct.quantization.int4_export import int4_file, weight_bits_by_layer
from kstruct.quantization.quantize import quantize
from kstruct.quantization.report import quantization_report
from kstruct.quantization.sensitivity import layer_sensitivity, ranked_layers
from kstruct.engine.arguments import positive_int_argument
from kstruct.engine.step import Step, StepResult, TrainingStep
from kstruct.engine.training import StepContext
from tflite_export.verify import keras_outputs

INT8_TARGET = "int8"
# The full-integer targets (tflite_export rows with quantize="int8"); tests check the two agree.
INTEGER_TARGETS = ("int8", "edgetpu", "micro")
# What a 4-bit QAT model exports to: ai-edge-quantizer's file with its 4-bit kernels (int4_export).
FOUR_BIT_TARGETS = ("int4",)
# The most layers `auto` leaves in float in an int8 file (`ptq(float_layers=k)`, the k that int8 hurts most).
MAX_FLOAT_LAYERS = 3
# How `ptq(float_layers=k)` picks its k layers: those int8 hurts most, or those faster in float on this machine.
FLOAT_BY = ("accuracy", "latency")


def _top1(predictions: np.ndarray, y) -> float:
    """Top-1 accuracy against int labels of `predictions.shape[:-1]` (per row or per pixel), or one-hot."""
    labels = np.asarray(y)
    labels = labels.argmax(-1) if labels.shape == predictions.shape else labels.reshape(predictions.shape[:-1])
    return float(np.mean(predictions.argmax(-1) == labels))


def _class_scores(model: keras.Model, y) -> bool:
    """True for one output of class scores with class labels: the case argmax accuracy means something.

    A single sigmoid or regression unit (or float targets) is scored by the stage
    report's task-aware figures instead.
    """
    labels = np.asarray(y)
    output = model.outputs[0].shape
    return len(model.outputs) == 1 and output[-1] > 1 and (labels.dtype.kind in "iu" or labels.shape[1:] == output[1:])


def _integer_target(step, context: StepContext) -> str:
    """The target the step's int8 file is made and checked for; refuses a float one up front.

    A QAT model converted for a float target keeps every fake quantization as a
    QUANTIZE/DEQUANTIZE pair, and a PTQ file is integer whatever it is called: so
    both steps need an integer export target, and say so before any training.
    """
    for where, target in (("optimize(target=...)", context.target), (f"{step.name}(target=...)", step.target)):
        if target is not None and target not in step.targets:
            raise StrategyError(
                f"`{step.name}` makes an integer TFLite file, so it needs an integer target: one of "
                f"{step.targets}. Received: {where} = {target!r}. Use target='int8', or drop "
                f"`{step.name}` from the strategy for a {target} file."
            )
    return step.target or context.target


def _float_layers_argument(value: Any) -> int | str | list[str]:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)):
        return value if isinstance(value, str) else list(value)
    raise StrategyError(
        "Expected `float_layers` in ptq to be a count of the most int8-sensitive layers (0, 1, 2, ...) or layer "
        f"names (a name or a list). Received: float_layers={value!r}"
    )


class QAT(TrainingStep):
    """Quantization-aware training: `quantize` the model, fine-tune it, check its int8 file.

    The returned model is the QAT Keras model; the int8 TFLite file converted
    from it reproduces its predictions. The notes hold the Keras QAT accuracy, the
    int8 TFLite accuracy and their top-1 agreement on the validation data, and the
    layers left in float.

    With `bits=4`, Dense, Conv1D and Conv2D kernels train on the 4-bit grid (per
    output channel; activations stay 8-bit) and the step makes the `int4` file with
    ai-edge-quantizer from the model's own fake-quantized kernels and learned ranges
    (`int4_export.int4_file`). `layers=` picks which of those layers get 4 bits; the
    others keep 8-bit kernels in the same file (per-layer mixed precision).

    Args:
        epochs: fine-tuning epochs (default: the strategy's `epochs`).
        bits: 8 (default), or 4 for the `int4` target.
        layers: with `bits=4`, the layers that get 4 bits (a name, a regex, a list).
        preserve_sparsity: keep zeros from pruning exactly zero (default True).
        target: the integer TFLite target to check against (default: the
            strategy's target).
        distill: fine-tune from the teacher's class scores as well as the labels.
        **training: `optimizer`, `learning_rate`, `lr_schedule`, `batch_size` (see `TrainingStep`).

    Raises:
        StrategyError: when the strategy's target or `target` is not one of
            `targets` (float32, dynamic, float16, gpu, int16x8), before any training.
    """

    name = "qat"
    search_rank = 90
    quantizes = True
    targets = INTEGER_TARGETS  # the export targets it can serve: its fake quantization is int8's

    def __init__(
        self, *, epochs: int | None = None, bits: int = 8, layers: str | list[str] | None = None,
        preserve_sparsity: bool = True, target: str | None = None, distill: bool = False, **training,
    ):
        self.init_training(epochs, distill, training)
        if bits not in (8, 4):
            raise StrategyError(f"Expected `bits` to be 8 or 4 in qat. Received: bits={bits!r}")
        if layers is not None and bits != 4:
            raise StrategyError(f"qat's `layers` picks the layers that get 4 bits; pass bits=4 with it. Received: layers={layers!r}")
        self.bits = int(bits)
        self.layers = layers
        self.preserve_sparsity = bool(preserve_sparsity)
        self.target = target
        if self.bits == 4:
            self.targets = FOUR_BIT_TARGETS

    @classmethod
    def search_space(cls, hp, space) -> "QAT | None":
        """For an integer target `auto` chooses between `qat` and `ptq` (one choice, both steps read it).

        For the `int4` target `qat` trains 4-bit kernels, and `auto` also chooses how many of
        the layers 4 bits hurt most keep 8-bit kernels (`eight_bit_layers`), from the 4-bit
        sensitivity ranking of the model (`layer_sensitivity(bits=4)` on the validation inputs).
        """
        if not (space.integer_target or space.four_bit_target):
            return None
        if hp.Choice("quantization", ["ptq", "qat"], default="ptq") != "qat":
            return None
        if not space.four_bit_target:
            return cls()
        ranking = [name for name, _ in layer_sensitivity(space.model, space.validation_inputs, bits=4)]
        if len(ranking) < 2:
            return cls(bits=4)
        eight_bit = hp.Int("eight_bit_layers", 0, len(ranking) - 1, default=0)
        return cls(bits=4, layers=sorted(ranking[eight_bit:]) if eight_bit else None)

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        import tflite_export

        target = _integer_target(self, context)
        qat_model = quantize(
            model, preserve_sparsity=self.preserve_sparsity, bits=self.bits, layers=self.layers if self.bits == 4 else None
        )
        self.training_context(context).fit(qat_model, distill=self.distill)
        if self.bits == 4:
            blob = int4_file(qat_model, context.representative_inputs())
        else:
            blob = tflite_export.convert(qat_model, target, representative_data=context.representative_inputs())
        x, y = context.validation.arrays()
        report = quantization_report(qat_model)
        notes = {"target": target, "float_layers": {entry.name: entry.detail for entry in report.skipped}}
        if self.bits == 4:
            notes["weight_bits"] = weight_bits_by_layer(qat_model)
        if _class_scores(qat_model, y):  # other tasks and outputs: the stage report's figures
            keras_predictions = np.asarray(keras_outputs(qat_model, x))
            tflite_predictions = np.asarray(tflite_export.predict(blob, x))
            notes.update({
                "keras_qat_accuracy": _top1(keras_predictions, y),
                "int4_accuracy" if self.bits == 4 else "int8_accuracy": _top1(tflite_predictions, y),
                "top1_agreement": float(np.mean(keras_predictions.argmax(-1) == tflite_predictions.argmax(-1))),
            })
        return StepResult(model=qat_model, notes=notes, tflite=blob if target == context.target else None)


class PTQ(Step):
    """Post-training full-integer quantization by the TFLite converter, calibrated on training inputs.

    The model is unchanged; the step hands on the int8 file it produced.

    `float_layers` keeps layers in float inside the int8 file (target `int8` only): each
    runs with float weights between a DEQUANTIZE and a QUANTIZE, the rest is int8. A count
    k picks the k layers int8 hurts most, ranked on the validation inputs by
    `sensitivity.layer_sensitivity` (an outlier weight or a huge activation range ranks a
    layer first); names pick those layers. With `float_by='latency'` the count picks instead
    the layers whose float copy makes the file faster on this machine, most time saved first
    (`float_speed.float_speedups`; fewer than k when fewer are faster). `auto` searches k for
    the int8 target, and `float_by` under a latency budget.

    Args:
        samples: calibration inputs drawn from the training data (at most 200).
        target: the integer TFLite target (default: the strategy's target).
        float_layers: 0 (default: all int8), a count of the most sensitive layers, or layer
            names (a name or a list) to leave in float.
        float_by: how a count picks its layers: "accuracy" (the most int8-sensitive) or
            "latency" (the most time saved in float).

    Raises:
        StrategyError: when the strategy's target or `target` is not one of
            `targets` (a float file from ptq would be int8 all the same), or `float_layers`
            is set for a target other than `int8`.
    """

    name = "ptq"
    quantizes = True
    search_rank = 90
    targets = (*INTEGER_TARGETS, "int16x8", *FOUR_BIT_TARGETS)

    def __init__(self, *, samples: int = 200, target: str | None = None, float_layers: int | str | list[str] = 0,
                 float_by: str = "accuracy"):
        self.samples = positive_int_argument("samples", samples)
        self.target = target
        self.float_layers = _float_layers_argument(float_layers)
        if float_by not in FLOAT_BY:
            raise StrategyError(f"Expected `float_by` in ptq to be one of {FLOAT_BY}. Received: float_by={float_by!r}")
        self.float_by = float_by
        if self.float_layers:
            self.targets = (INT8_TARGET,)  # edgetpu and micro run integer ops only

    @classmethod
    def search_space(cls, hp, space) -> "PTQ | None":
        """See `QAT.search_space`: the same choice.

        For the `int8` target `auto` also chooses how many of the layers int8 hurts most stay in
        float (`float_layers`, 0 to `MAX_FLOAT_LAYERS`, never every layer); the step ranks the
        model it receives, so the count means the same after channels or blocks were removed.
        With a latency budget (`speedup`, `latency_ms`) it also chooses how those layers are picked
        (`float_by`): the most int8-sensitive, or the ones that run faster in float on this machine,
        and the first trial's guess is the one layer most faster in float.
        """
        if not (space.integer_target or space.four_bit_target):
            return None
        if hp.Choice("quantization", ["ptq", "qat"], default="ptq") != "ptq":
            return None
        most = min(MAX_FLOAT_LAYERS, len(ranked_layers(space.model)) - 1) if space.target == INT8_TARGET else 0
        if most <= 0:
            return cls()
        if not space.latency_goal:
            return cls(float_layers=hp.Int("float_layers", 0, most, default=0))
        # Under a latency budget the first guess keeps in float the one layer that is faster so (none where
        # int8 is faster everywhere): a full-integer file can be slower than the float one (`float_speed`).
        float_layers = hp.Int("float_layers", 0, most, default=1)
        return cls(float_layers=float_layers, float_by=hp.Choice("float_by", list(FLOAT_BY), default="latency"))

    def _float_layer_names(self, model: keras.Model, context: StepContext) -> list[str]:
        """The layers to leave in float: the names given, or the `float_layers` first by `float_by`."""
        if not isinstance(self.float_layers, int):
            return [self.float_layers] if isinstance(self.float_layers, str) else list(self.float_layers)
        if not self.float_layers:
            return []
        if self.float_by == "latency":
            target = _integer_target(self, context)
            ranking = [name for name, _ in float_speedups(model, context.representative_inputs(self.samples), target)]
            return ranking[: self.float_layers]  # fewer when fewer layers are faster in float
        ranking = [name for name, _ in layer_sensitivity(model, context.validation.arrays()[0])]
        if not ranking:
            raise StrategyError(
                f"ptq(float_layers={self.float_layers}) ranks the model's layers by int8 sensitivity, which needs a "
                "Sequential or functional model with Dense/Conv layers; name the layers instead: float_layers=['name']"
            )
        return ranking[: self.float_layers]

    def export_options(self, model: keras.Model, context: StepContext) -> dict[str, Any]:
        """The float layers this step would keep in `model`'s file (auto times a structure with them)."""
        names = self._float_layer_names(model, context)
        return {"float_layers": names} if names else {}

    def apply(self, model: keras.Model, context: StepContext) -> StepResult:
        import tflite_export

        target = _integer_target(self, context)
        x, y = context.validation.arrays()
        float_layers = self._float_layer_names(model, context)
        blob = tflite_export.convert(
            model, target, representative_data=context.representative_inputs(self.samples), float_layers=float_layers
        )
        notes = {"target": target}
        if float_layers:
            notes["float_layers"] = float_layers
        if _class_scores(model, y):  # other tasks and outputs: the stage report's figures
            keras_predictions = np.asarray(keras_outputs(model, x))
            tflite_predictions = np.asarray(tflite_export.predict(blob, x))
            notes.update(keras_accuracy=_top1(keras_predictions, y), int8_accuracy=_top1(tflite_predictions, y))
        return StepResult(model=model, notes=notes, tflite=blob if target == context.target else None)
