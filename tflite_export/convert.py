"""Keras 3 model -> TFLite bytes for a named target.

The only module that names TensorFlow for conversion. The model is traced with a
`tf.function` at a static input shape (batch 1 by default) and converted with
`TFLiteConverter.from_concrete_functions`: `from_keras_model` keeps the batch
dynamic, so Flatten becomes SHAPE/STRIDED_SLICE/PACK/RESHAPE and LiteRT's GPU
accelerator refuses the file.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Iterable

import numpy as np

from tflite_export._recurrent import unroll_recurrent
from tflite_export.analyze import analyze
from tflite_export.check import check, describe_failure
from tflite_export import targets as targets_lib
from tflite_export.errors import CompatibilityError, EdgeTpuCpuFallbackWarning, ExportError

MAX_CALIBRATION_SAMPLES = 200
_NEEDS_FLEX = "ERROR_NEEDS_FLEX_OPS"


def _load_keras_model(model: Any):
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            "TFLite export needs the TensorFlow backend (KERAS_BACKEND=tensorflow); the active "
            f"backend is {keras.backend.backend()!r}. Save the model with model.save('model.keras') "
            "and pass that file to convert() in a process that runs the TensorFlow backend"
        )
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not path.endswith(".keras"):
            raise ExportError(f"Expected `model` to be a Keras model or a path to a .keras file. Received: model={path!r}")
        if not os.path.isfile(path):
            raise ExportError(f"Expected `model` to be a path to an existing .keras file. Received: model={path!r} (no such file)")
        return keras.saving.load_model(path, compile=False)
    if not isinstance(model, keras.Model):
        raise ExportError(
            f"Expected `model` to be a keras.Model or a path to a .keras file. Received: model of type {type(model).__name__}"
        )
    return model


def _input_signature(model) -> tuple[tuple[Any, ...], str]:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ExportError(
            "Expected a model with a known input shape. Received: a model without `inputs` "
            "(a subclassed model never called?). Wrap it: keras.Sequential([keras.Input(shape), model])"
        )
    if len(inputs) != 1:
        raise ExportError(f"Expected a model with one input. Received: a model with {len(inputs)} inputs")
    shape = tuple(inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise ExportError(
            f"Expected an input shape with static non-batch dims for TFLite targets. Received: {shape}; "
            "give keras.Input a full shape"
        )
    return shape, str(inputs[0].dtype)


def _check_sample_shape(shape: tuple, expected: tuple) -> None:
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
        raise ExportError(f"representative_data has shape {tuple(shape)}; the model expects inputs of shape {expected}")


def _calibration_samples(data: Any, expected: tuple, dtype: str) -> list[np.ndarray]:
    """Up to MAX_CALIBRATION_SAMPLES single-sample batches from an array or an iterable of batches."""
    batches: Iterable[Any] = [data] if isinstance(data, np.ndarray) or hasattr(data, "shape") else data
    samples: list[np.ndarray] = []
    for batch in batches:
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            batch = batch[0]  # (x, y) pairs from a dataset
        batch = np.asarray(batch)
        _check_sample_shape(batch.shape, expected)
        for row in batch[: MAX_CALIBRATION_SAMPLES - len(samples)]:
            samples.append(row[None].astype(dtype))
        if len(samples) >= MAX_CALIBRATION_SAMPLES:
            break
    if not samples:
        raise ExportError("representative_data is empty; pass at least one input sample (100-200 is typical)")
    return samples


def _configure(converter, spec: targets_lib.Target, io_dtype: str, samples, allow_flex: bool, sparse_weights: bool):
    import tensorflow as tf

    builtins = {
        None: tf.lite.OpsSet.TFLITE_BUILTINS,
        "dynamic": tf.lite.OpsSet.TFLITE_BUILTINS,
        "float16": tf.lite.OpsSet.TFLITE_BUILTINS,
        "int8": tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        "int16x8": tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
    }[spec.quantize]
    converter.target_spec.supported_ops = [builtins] + ([tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
    optimizations = [] if spec.quantize is None else [tf.lite.Optimize.DEFAULT]
    if sparse_weights:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if spec.quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if spec.needs_data:
        converter.representative_dataset = lambda: ([s] for s in samples)
    if io_dtype != "float32":
        converter.inference_input_type = tf.as_dtype(io_dtype)
        converter.inference_output_type = tf.as_dtype(io_dtype)


def _flex_ops(error: Exception) -> list[str]:
    names = []
    for data in getattr(error, "errors", None) or []:
        if type(data).ErrorCode.Name(data.error_code) == _NEEDS_FLEX:
            names.append(data.operator.name.removeprefix("tf."))
    return list(dict.fromkeys(names))


def _first_error_line(error: Exception) -> str:
    for line in str(error).splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def convert(
    model: Any,
    target: str = "float32",
    representative_data: Any = None,
    *,
    batch_size: int = 1,
    io_dtype: str | None = None,
    allow_flex: bool = False,
    sparse_weights: bool = False,
    strict: bool = False,
) -> bytes:
    """Converts a Keras 3 model (TensorFlow backend) to TFLite bytes for `target`.

    Args:
        model: a `keras.Model` with one input of static non-batch shape, or a path
            to a `.keras` file (the way to export a model trained on JAX or PyTorch:
            save it, then load it here under the TensorFlow backend).
        target: one of `TARGETS` (see `targets.TARGET_TABLE` and docs/deployment.md).
        representative_data: calibration inputs for the integer targets (int8,
            int16x8, edgetpu, micro): an array `(n, *input_shape)` or an iterable of
            such batches (or of `(x, y)` pairs); up to 200 samples are used.
        batch_size: the static batch of the file (edgetpu and micro: 1 only).
        io_dtype: input/output dtype; defaults to the target's first (int8: "int8",
            or "uint8"; edgetpu: "uint8", or "int8"; int16x8: "float32" or "int16").
        allow_flex: allow SELECT_TF_OPS (Flex) kernels, which the app must link.
        sparse_weights: store pruned weights sparsely (`Optimize.EXPERIMENTAL_SPARSITY`).
        strict: edgetpu only: raise instead of warning when ops would stay on the CPU.

    Returns:
        The `.tflite` flatbuffer.

    Raises:
        ExportError: bad arguments, missing or misshapen calibration data, an op
            that needs Flex without `allow_flex`, a failed conversion.
        CompatibilityError: the file breaks its target's restrictions (gpu, micro,
            edgetpu with `strict=True`).

    Example:

    >>> blob = convert(model, "int8", representative_data=x_train[:200])  # doctest: +SKIP
    >>> open("model_int8.tflite", "wb").write(blob)  # doctest: +SKIP
    """
    spec = targets_lib.get_target(target)
    io_dtype = spec.io_dtypes[0] if io_dtype is None else io_dtype
    if io_dtype not in spec.io_dtypes:
        raise ExportError(f"Expected `io_dtype` to be one of {spec.io_dtypes} for target={target!r}. Received: io_dtype={io_dtype!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(f"Expected `batch_size` to be a positive int. Received: batch_size={batch_size!r}")
    if spec.batch_one and batch_size != 1:
        raise ExportError(f"Expected `batch_size` to be 1 for target={target!r}. Received: batch_size={batch_size}")
    if spec.needs_data and representative_data is None:
        raise ExportError(
            f"target={target!r} quantizes activations and needs calibration inputs: pass "
            "representative_data=x_train[:200] (an array of model inputs)"
        )

    keras_model = _load_keras_model(model)
    shape, dtype = _input_signature(keras_model)
    if spec.needs_data or spec.op_check is not None:
        keras_model = unroll_recurrent(keras_model)  # a WHILE loop breaks calibration and delegates
    samples = _calibration_samples(representative_data, shape, dtype) if spec.needs_data else None

    import tensorflow as tf

    traced = tf.function(lambda x: keras_model(x, training=False))
    concrete = traced.get_concrete_function(tf.TensorSpec((batch_size,) + shape[1:], dtype, name="input"))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], keras_model)
    # The SavedModel path keeps Keras 3 variables as VAR_HANDLE/READ_VARIABLE ops;
    # freezing the concrete function gives constant weights and FULLY_CONNECTED.
    converter.experimental_lower_to_saved_model = False
    _configure(converter, spec, io_dtype, samples, allow_flex, sparse_weights)
    try:
        with warnings.catch_warnings():
            # Emitted for every full-integer conversion with integer I/O; not actionable.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            blob = converter.convert()
    except Exception as error:  # ConverterError is not part of tf.lite's public API
        flex = _flex_ops(error)
        if flex and not allow_flex:
            raise ExportError(
                f"target={target!r} needs TensorFlow ops that LiteRT's builtin op set lacks: {', '.join(flex)}. "
                "They run only as SELECT_TF_OPS (Flex) kernels, which the app must link; pass "
                "allow_flex=True (CLI: --allow-flex) to accept that, or replace the layer"
            ) from None
        raise ExportError(f"TFLite conversion for target={target!r} failed: {_first_error_line(error)}") from error

    analysis = analyze(blob, gpu_analyzer=spec.op_check == "gpu")
    if analysis.uses_flex and not allow_flex:
        raise ExportError(f"The converter emitted Flex ops without allow_flex=True: {', '.join(analysis.custom_ops)}")
    result = check(analysis, target)
    if not result.ok:
        message = describe_failure(result)
        if spec.op_check == "edgetpu" and not strict:
            warnings.warn(message, EdgeTpuCpuFallbackWarning, stacklevel=2)
        else:
            raise CompatibilityError(message, target=target, ops=tuple(result.unsupported_ops))
    return blob

