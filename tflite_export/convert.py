"""Keras 3 model -> TFLite bytes for a named target.

The only module that names TensorFlow for conversion. The model is traced with a
`tf.function` at a static input shape (batch 1 by default) and converted with
`TFLiteConverter.from_concrete_functions`: `from_keras_model` keeps the batch
dynamic, so Flatten becomes SHAPE/STRIDED_SLICE/PACK/RESHAPE and LiteRT's GPU
accelerator refuses the file.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from tflite_export._dead_ranges import has_dead_activations, widen_dead_ranges
from tflite_export._float_layers import layer_scopes, quantize_keeping_float
from tflite_export._isolate import run_isolated
from tflite_export.precision import float32_twin
from tflite_export._recurrent import rolled_recurrent_layers, unroll_recurrent
from tflite_export._via_tensorflow import convert_in_tensorflow_child
from tflite_export._zero_scales import nonzero_weight_scales
from tflite_export.analyze import analyze
from tflite_export.check import check, describe_failure
from tflite_export import int4, runtime
from tflite_export import targets as targets_lib
from tflite_export.errors import CompatibilityError, EdgeTpuCpuFallbackWarning, ExportError

MAX_CALIBRATION_SAMPLES = 200
_NEEDS_FLEX = "ERROR_NEEDS_FLEX_OPS"


def _load_keras_model(model: Any):
    import keras

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


def _input_signature(model) -> list[tuple[str, tuple[Any, ...], str]]:
    """(name, shape, dtype) of each input, in `keras.tree.flatten(model.input)` order."""
    import keras

    inputs = keras.tree.flatten(runtime.keras_input_structure(model)) if getattr(model, "inputs", None) else []
    if not inputs:
        raise ExportError(
            "Expected a model with a known input shape. Received: a model without `inputs` "
            "(a subclassed model never called?). Wrap it: keras.Sequential([keras.Input(shape), model])"
        )
    signature = []
    for tensor in inputs:
        shape = tuple(tensor.shape)
        if any(d is None for d in shape[1:]):
            raise ExportError(
                f"Expected an input shape with static non-batch dims for TFLite targets. Received: {shape}; "
                "give keras.Input a full shape"
            )
        signature.append((tensor.name, shape, str(tensor.dtype)))
    return signature


def _mask_producers(model) -> list:
    """The layers, nested models' included, that put a Keras mask on their output."""
    import keras

    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.Masking) or (isinstance(layer, keras.layers.Embedding) and layer.mask_zero):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += _mask_producers(layer)
    return found


def _masked_int8_message(error: ExportError, producer) -> str:
    """Why a model with a Keras mask does not convert for a calibrated integer target, and the ways out."""
    import keras

    if isinstance(producer, keras.layers.Masking):
        why = (f"The model carries a Keras mask from a Masking layer (`{producer.name}`), which computes it with "
               "REDUCE_ANY; a recurrent layer reading it keeps its state where the mask is 0, with SELECT_V2 (and "
               "CAST): TensorFlow's integer quantizer quantizes none of them.")
        without = "drop the Masking layer: the model learns to ignore the padding"
    else:
        why = (f"The model carries a Keras mask (from `{producer.name}`): a recurrent layer reading it keeps its "
               "state where the mask is 0, with SELECT_V2 (and CAST), which TensorFlow's integer quantizer does not "
               "quantize.")
        without = "mask_zero=False: the model learns to ignore the padding"
    return (f"{error} {why} Use target='dynamic' (int8 weights, float activations) or 'float16', or train without "
            f"the mask ({without}).")


def _check_numeric_inputs(signature: list, target: str) -> None:
    """A calibrated target feeds the model numbers; a string input (TextVectorization or StringLookup
    inside the model) has no int8 form, and its lookup ops exist in LiteRT only as Flex kernels."""
    strings = [name for name, _, dtype in signature if dtype == "string"]
    if strings:
        raise ExportError(
            f"target={target!r} calibrates the model on its inputs, but input `{strings[0]}` takes strings (a "
            "TextVectorization or StringLookup inside the model), which have no integer form. Keep the text "
            "preprocessing outside the model (map it over the data, as Keras's guides do for TFLite) and convert "
            "the model that takes its token ids, or use target='float32' with allow_flex=True."
        )


def _check_sample_shape(shape: tuple, expected: tuple) -> None:
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
        raise ExportError(f"representative_data has shape {tuple(shape)}; the model expects inputs of shape {expected}")


def _calibration_samples(data: Any, signature: list) -> list[list[np.ndarray]]:
    """Up to MAX_CALIBRATION_SAMPLES single-sample batches (one array per input) from an array,
    a list or dict of arrays (multi-input), or an iterable of such batches."""
    import keras

    structured = isinstance(data, dict) or (
        len(signature) > 1 and isinstance(data, (list, tuple)) and all(hasattr(v, "shape") for v in data)
    )
    batches: Iterable[Any] = [data] if structured or isinstance(data, np.ndarray) or hasattr(data, "shape") else data
    samples: list[list[np.ndarray]] = []
    for batch in batches:
        if not structured and isinstance(batch, (tuple, list)) and len(batch) == 2:
            batch = batch[0]  # (x, y) pairs from a dataset
        names = [name for name, _, _ in signature]
        by_name = isinstance(batch, dict) and set(batch) == set(names)  # a dict keyed by input name
        arrays = [np.asarray(v) for v in ([batch[n] for n in names] if by_name else keras.tree.flatten(batch))]
        if len(arrays) != len(signature):
            raise ExportError(f"representative_data has {len(arrays)} input(s); the model has {len(signature)}")
        for array, (_, shape, _) in zip(arrays, signature):
            _check_sample_shape(array.shape, shape)
        for i in range(min(len(arrays[0]), MAX_CALIBRATION_SAMPLES - len(samples))):
            samples.append([a[i][None].astype(dtype) for a, (_, _, dtype) in zip(arrays, signature)])
        if len(samples) >= MAX_CALIBRATION_SAMPLES:
            break
    if not samples:
        raise ExportError("representative_data is empty; pass at least one input sample (100-200 is typical)")
    return samples


def _configure(
    converter, spec: targets_lib.Target, io_dtype: str, samples, allow_flex: bool, sparse_weights: bool,
    legacy_quantizer: bool, float_scopes: Sequence[str] = (),
):
    import tensorflow as tf

    builtins = {
        None: tf.lite.OpsSet.TFLITE_BUILTINS,
        "dynamic": tf.lite.OpsSet.TFLITE_BUILTINS,
        "float16": tf.lite.OpsSet.TFLITE_BUILTINS,
        "int8": tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        "int16x8": tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
    }[spec.quantize]
    # With float layers the file holds float ops beside the int8 ones (`_float_layers`).
    builtins = [builtins, tf.lite.OpsSet.TFLITE_BUILTINS] if float_scopes else [builtins]
    converter.target_spec.supported_ops = builtins + ([tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
    optimizations = [] if spec.quantize is None else [tf.lite.Optimize.DEFAULT]
    if sparse_weights and not float_scopes:  # with float layers: sparsified after quantizing (`_run_converter`)
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if spec.quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if spec.needs_data:
        converter.representative_dataset = lambda: iter(samples)
        # Unrolled recurrent layers: TF 2.21's MLIR quantizer leaves the first time
        # step's SPLIT in float (DEQUANTIZE/SPLIT/QUANTIZE) in some conversions of
        # the same model and not others (tests/tflite_export/test_rnn.py repeats
        # one); the legacy quantizer quantizes it every time, to the same outputs.
        converter.experimental_new_quantizer = not legacy_quantizer or bool(float_scopes)
        # Calibrate only: the calibrated float file is quantized by `_float_layers`, with a deny list.
        converter._experimental_calibrate_only = bool(float_scopes)
    if io_dtype != "float32":
        converter.inference_input_type = tf.as_dtype(io_dtype)
        converter.inference_output_type = tf.as_dtype(io_dtype)


def _flex_ops(error: Exception) -> list[str]:
    names = []
    for data in getattr(error, "errors", None) or []:
        if type(data).ErrorCode.Name(data.error_code) == _NEEDS_FLEX:
            names.append(data.operator.name.removeprefix("tf."))
    return list(dict.fromkeys(names))


def _control_flow_ops(graph) -> list[str]:
    """TF control-flow op types in a traced graph: the ones TFLite keeps as WHILE / IF."""
    types = {op.type for op in graph.get_operations()}
    return sorted(types & {"While", "StatelessWhile", "If", "StatelessIf"})


def _has_fake_quant(graph) -> bool:
    return any(op.type.startswith("FakeQuant") for op in graph.get_operations())


def _check_finite(samples: list[list[np.ndarray]]) -> None:
    bad = [
        i for i, sample in enumerate(samples)
        if any(np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all() for a in sample)
    ]
    if bad:
        raise ExportError(
            f"representative_data holds NaN or infinite values (sample {bad[0]}, {len(bad)} of {len(samples)} "
            "samples): ranges calibrated from them are meaningless, and NaN has crashed TF's quantizer; "
            "clean the data (np.isfinite(x).all() must hold)"
        )


def _check_no_nan_weights(model) -> None:
    # NaN only: an infinite weight can be deliberate (a clip bound, a -inf mask), NaN never is.
    bad = [w.path for w in model.weights if np.isnan(np.asarray(w.numpy(), dtype=np.float64)).any()]
    if bad:
        raise ExportError(
            f"The model's weights hold NaN values ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
            "training diverged, and a file quantized from them computes nothing. Retrain (lower the learning rate) "
            "or restore a checkpoint from before the divergence"
        )


def _first_error_line(error: Exception) -> str:
    for line in str(error).splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    if not str(error).strip():  # the quantizer logs its reason to stderr and raises an empty RuntimeError
        return f"{type(error).__name__} (the converter printed the reason to stderr, above)"
    return str(error).splitlines()[0]


def _run_converter(
    converter, target: str, io_dtype: str, samples, allow_flex: bool, sparse_weights: bool, legacy_quantizer: bool = False,
    float_scopes: Sequence[str] = (),
) -> bytes:
    """Configures `converter` for `target`, converts, and turns converter errors into `ExportError`.

    `float_scopes`: the name scopes of layers to leave in float (`float_layers`, see `_float_layers`).
    """
    # The SavedModel path keeps Keras 3 variables as VAR_HANDLE/READ_VARIABLE ops;
    # freezing the concrete function gives constant weights and FULLY_CONNECTED.
    converter.experimental_lower_to_saved_model = False
    _configure(
        converter, targets_lib.get_target(target), io_dtype, samples, allow_flex, sparse_weights, legacy_quantizer,
        float_scopes,
    )
    try:
        with warnings.catch_warnings():
            # Emitted for every full-integer conversion with integer I/O; not actionable.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            blob = converter.convert()
            if float_scopes:
                blob = quantize_keeping_float(widen_dead_ranges(blob), float_scopes, io_dtype)
                if sparse_weights:
                    blob = _sparsify(blob)
            elif converter.representative_dataset is not None and has_dead_activations(blob):
                blob = _requantize_dead(converter, io_dtype, sparse_weights) or blob
            return blob
    except ExportError:
        raise
    except Exception as error:  # ConverterError is not part of tf.lite's public API
        flex = _flex_ops(error)
        if flex and not allow_flex:
            raise ExportError(
                f"target={target!r} needs TensorFlow ops that LiteRT's builtin op set lacks: {', '.join(flex)}. "
                "They run only as SELECT_TF_OPS (Flex) kernels, which the app must link; pass "
                "allow_flex=True (CLI: --allow-flex) to accept that, or replace the layer"
            ) from None
        raise ExportError(f"TFLite conversion for target={target!r} failed: {_first_error_line(error)}") from error


def _sparsify(blob: bytes) -> bytes:
    from tensorflow.lite.python.convert import mlir_sparsify  # what EXPERIMENTAL_SPARSITY runs

    return mlir_sparsify(blob)


def _requantize_dead(converter, io_dtype: str, sparse_weights: bool) -> bytes | None:
    """The file quantized again, from calibration ranges with the dead ones widened (see `_dead_ranges`).

    For a file whose activation got a scale from an all-zero calibrated range: the converter calibrates
    only, and the calibrated file is quantized here the way the converter would have (the same quantizer,
    types and sparsity; a healthy model forced through here gives the converter's outputs exactly), after
    `widen_dead_ranges`. None when no calibrated range is degenerate (a QAT graph, which the converter
    quantizes from its FakeQuant ranges: nothing calibrated to widen). Other files never come here, so
    they stay exactly what the converter made.
    """
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.python.optimize import calibrator
    from tensorflow.lite.python.util import modify_model_io_type

    legacy = not converter.experimental_new_quantizer
    ops = set(converter.target_spec.supported_ops)
    int16 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 in ops
    allow_float = bool({tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS} & ops)  # as the converter decides
    # Calibrate only, in float: the I/O types and sparsity are applied to the quantized file below.
    converter._experimental_calibrate_only = True
    converter.experimental_new_quantizer = True  # with calibrate-only: skips the converter's I/O rewrite
    converter.inference_input_type = converter.inference_output_type = tf.float32
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    calibrated = converter.convert()
    widened = widen_dead_ranges(calibrated)
    if widened is calibrated:
        return None
    io = tf.as_dtype(io_dtype)
    if legacy or int16:  # the converter's legacy quantizer (`Calibrator.calibrate_and_quantize`)
        activation_type, bias_type = (tf.int16, tf.int64) if int16 else (tf.int8, tf.int32)
        blob = calibrator.Calibrator(widened)._calibrator.QuantizeModel(
            *(np.dtype(t.as_numpy_dtype).num for t in (io, io)), allow_float,
            *(np.dtype(t.as_numpy_dtype).num for t in (activation_type, bias_type)), False, False,
        )
        blob = modify_model_io_type(blob, io, io)
    else:
        blob = mlir_quantize(widened, input_data_type=io, output_data_type=io)
    return _sparsify(blob) if sparse_weights else blob


def _freeze(concrete) -> tuple[bytes, list[str], list[str]]:
    """The traced function as a GraphDef with constant weights, for a child process.

    A GraphDef needs neither Keras nor the model's custom layer classes to load,
    so any model that traces here converts in the child.
    """
    # The converter freezes its concrete functions with this same helper; tf.lite has no public one.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete)
    return (
        frozen.graph.as_graph_def().SerializeToString(),
        [t.name for t in frozen.inputs],
        [t.name for t in frozen.outputs],
    )


def _convert_frozen(graph_def: bytes, inputs: list[str], outputs: list[str], *options) -> bytes:
    """Child-process side of `convert(isolate=True)`: GraphDef -> concrete function -> TFLite."""
    import tensorflow as tf

    definition = tf.compat.v1.GraphDef.FromString(graph_def)
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(definition, name=""), [])
    function = wrapped.prune(
        [wrapped.graph.as_graph_element(name) for name in inputs],
        [wrapped.graph.as_graph_element(name) for name in outputs],
    )
    return _run_converter(tf.lite.TFLiteConverter.from_concrete_functions([function]), *options)


def _crash_hint(spec: targets_lib.Target, control_flow: list[str]) -> str:
    working = "'float32', 'dynamic' or 'float16'"
    if control_flow:
        return (
            f"Target {spec.name!r} runs the model on calibration data, which TF's calibrator cannot do through "
            f"{'/'.join(control_flow)} loops or conditionals (keras.ops.while_loop, fori_loop, cond, or a recurrent "
            f"layer with an unknown sequence length). Convert for target={working}, which keep the loop, or give "
            "the loop a fixed length"
        )
    return f"Check representative_data, or convert for target={working}, which need no calibration"


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
    isolate: bool | None = None,
    preload: Sequence[str] = (),
    float_layers: Sequence[str] = (),
) -> bytes:
    """Converts a Keras 3 model to TFLite bytes for `target`.

    On the TensorFlow backend the model is converted in this process. On any
    other backend (JAX, PyTorch) it is saved to a temporary `.keras` file and
    converted in a child process running the TensorFlow backend, which costs a
    fresh `import tensorflow` per call (see `_via_tensorflow`).

    Args:
        model: a `keras.Model` whose inputs have static non-batch shapes, or a path
            to a `.keras` file (the way to export a model trained on JAX or PyTorch:
            save it, then load it here under the TensorFlow backend).
        target: one of `TARGETS` (see `targets.TARGET_TABLE` and docs/deployment.md). `int4` and
            `int4-weights` are made by ai-edge-quantizer from the float32 file (see `tflite_export.int4`).
        representative_data: calibration inputs for the integer targets (int8,
            int16x8, edgetpu, micro): an array `(n, *input_shape)` (a list or dict
            of arrays for a multi-input model) or an iterable of such batches (or of
            `(x, y)` pairs); up to 200 samples are used.
        batch_size: the static batch of the file (edgetpu and micro: 1 only).
        io_dtype: input/output dtype; defaults to the target's first (int8: "int8",
            or "uint8"; edgetpu: "uint8", or "int8"; int16x8: "float32" or "int16").
        allow_flex: allow SELECT_TF_OPS (Flex) kernels, which the app must link.
        sparse_weights: store pruned weights sparsely (`Optimize.EXPERIMENTAL_SPARSITY`).
        strict: edgetpu only: raise instead of warning when ops would stay on the CPU.
        isolate: run the converter in a child process, so that a crash of its
            C++ code becomes an `ExportError` instead of killing this process.
            `None` (default) isolates the calibrated targets when the graph keeps
            control flow (WHILE/IF), the case where TF 2.21's calibrator segfaults;
            the child costs a fresh `import tensorflow` (4 s of CPU, 20+ s on a
            busy machine), too much to pay on every int8 conversion when the
            known crashes are prevented up front: recurrent layers are unrolled
            and NaN calibration data or weights are refused (see `_isolate`).
            Off the TensorFlow backend the conversion always runs in a child.
        preload: off the TensorFlow backend only: modules the child imports
            before loading the model. The modules of the model's registered
            custom classes are found and imported without being named here.
        float_layers: target `int8` only: names of layers with weights (nested models' layers
            included) whose ops stay in float, with float weights, between a DEQUANTIZE and a
            QUANTIZE; the rest of the file is int8 as usual. For the layers int8 hurts most
            (an outlier weight, a huge activation range). Uses the converter's MLIR quantizer
            on a calibrated file (see `_float_layers`); `analyze(blob).float_ops` lists the ops.

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
    io_dtype = _check_arguments(spec, io_dtype, batch_size, representative_data)
    float_layers = _check_float_layers(spec, float_layers)
    if spec.quantize in ("int4", "int4-weights"):
        return _convert_int4(model, spec, representative_data, batch_size=batch_size, allow_flex=allow_flex,
                             isolate=isolate, preload=preload)
    # A mixed-precision model traces to float16 kernels LiteRT lacks; its float32 twin is what
    # converts (and what a JAX or PyTorch model sends to the TensorFlow child).
    keras_model = float32_twin(_load_keras_model(model))
    signature = _input_signature(keras_model)
    if spec.needs_data:
        _check_numeric_inputs(signature, spec.name)
    samples = _calibration_samples(representative_data, signature) if spec.needs_data else None
    if samples is not None:
        _check_finite(samples)
        _check_no_nan_weights(keras_model)
    import keras

    if keras.backend.backend() != "tensorflow":
        return convert_in_tensorflow_child(
            keras_model, target, samples, convert_saved=_convert_saved, preload=preload, hint=_crash_hint(spec, []),
            batch_size=batch_size, io_dtype=io_dtype, allow_flex=allow_flex, sparse_weights=sparse_weights, strict=strict,
            float_layers=float_layers,
        )
    unrolled: list[str] = []
    if spec.needs_data or spec.op_check is not None:  # a WHILE loop breaks calibration and delegates
        unrolled = rolled_recurrent_layers(keras_model)
        keras_model = unroll_recurrent(keras_model)

    import tensorflow as tf

    concrete = _trace(keras_model, signature, batch_size)
    control_flow = _control_flow_ops(concrete.graph)
    # The legacy calibrating quantizer cannot read a QAT graph's FakeQuant ops (it
    # refuses their CAST/DEQUANTIZE), so it only takes unrolled float recurrent graphs.
    legacy_quantizer = bool(unrolled) and not _has_fake_quant(concrete.graph)
    if float_layers and _has_fake_quant(concrete.graph):
        raise ExportError(
            "`float_layers` works on a float model (post-training quantization): the converter quantizes a "
            "quantization-aware graph's ops while converting it, float layers included, before any deny list "
            f"applies. Received: float_layers={float_layers} with a model holding FakeQuant ops"
        )
    float_scopes = layer_scopes(keras_model, concrete, float_layers) if float_layers else []
    options = (target, io_dtype, samples, allow_flex, sparse_weights, legacy_quantizer, float_scopes)
    if isolate is None:
        isolate = spec.needs_data and bool(control_flow)
    try:
        if isolate:
            graph_def, inputs, outputs = _freeze(concrete)
            blob = run_isolated(
                _convert_frozen, graph_def, inputs, outputs, *options,
                what=f"The TFLite converter, converting for target={target!r},",
                hint=_crash_hint(spec, control_flow),
                reuse=True,
            )
        else:
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], keras_model)
            blob = _run_converter(converter, *options)
    except ExportError as error:
        masking = _mask_producers(keras_model)
        if spec.needs_data and masking and "Quantization not yet supported for op" in str(error):
            raise ExportError(_masked_int8_message(error, masking[0])) from error
        raise
    if spec.needs_data:  # a pruned all-zero channel must not get a scale of 0, which XNNPACK refuses
        blob = nonzero_weight_scales(blob)
    _check_file(blob, spec, unrolled, allow_flex=allow_flex, strict=strict)
    return blob


def _convert_int4(model: Any, spec: targets_lib.Target, representative_data: Any, **options) -> bytes:
    """The float32 file, then ai-edge-quantizer's 4-bit file from it (see `int4`)."""
    float_blob = convert(model, "float32", **options)
    samples = None
    if spec.needs_data:
        samples = _calibration_samples(representative_data, _input_signature(float32_twin(_load_keras_model(model))))
        _check_finite(samples)
    return int4.quantize_float_file(float_blob, spec.name, samples)


def _check_arguments(spec: targets_lib.Target, io_dtype: str | None, batch_size: Any, representative_data: Any) -> str:
    """Refuses bad arguments before any tracing; returns the file's I/O dtype."""
    target = spec.name
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
    return io_dtype


def _check_float_layers(spec: targets_lib.Target, float_layers: Any) -> list[str]:
    """`float_layers` as a list of names; refused for a target that is not `int8`."""
    names = [float_layers] if isinstance(float_layers, str) else list(float_layers or ())
    if not names:
        return []
    if any(not isinstance(name, str) for name in names):
        raise ExportError(f"Expected `float_layers` to be layer names (str). Received: float_layers={float_layers!r}")
    if spec.quantize != "int8" or spec.op_check is not None:
        raise ExportError(
            f"`float_layers` leaves layers in float inside an int8 file, so it needs target='int8' (edgetpu and micro "
            f"run integer ops only; the float targets have no int8 to leave). Received: target={spec.name!r}"
        )
    return list(dict.fromkeys(names))


def _trace(keras_model, signature: list, batch_size: int):
    """The model as one concrete TensorFlow function of a static batch.

    One tensor per input, named after its keras.Input; outputs flattened in keras.tree order,
    which `verify` relies on to pair them with Keras's.
    """
    import keras
    import tensorflow as tf

    structure = runtime.keras_input_structure(keras_model)
    traced = tf.function(
        lambda *xs: keras.tree.flatten(keras_model(keras.tree.pack_sequence_as(structure, list(xs)), training=False))
    )
    names = [name for name, _, _ in signature] if len(signature) > 1 else ["input"]
    specs = [tf.TensorSpec((batch_size,) + shape[1:], dtype, name=n) for n, (_, shape, dtype) in zip(names, signature)]
    return traced.get_concrete_function(*specs)


def _check_file(blob: bytes, spec: targets_lib.Target, unrolled: list[str], *, allow_flex: bool, strict: bool) -> None:
    """Refuses a file that breaks its target's op set (edgetpu without `strict`: a warning)."""
    target = spec.name
    analysis = analyze(blob, gpu_analyzer=spec.op_check == "gpu", gzip_size=False)  # ops only
    if analysis.uses_flex and not allow_flex:
        raise ExportError(f"The converter emitted Flex ops without allow_flex=True: {', '.join(analysis.custom_ops)}")
    result = check(analysis, target)
    if not result.ok:
        message = describe_failure(result)
        if unrolled and "UNPACK" in result.unsupported_ops:  # the op unrolling brings in
            message += (
                f" (the model's recurrent layers {unrolled} are unrolled over time for {target!r}, since no "
                "delegate runs their WHILE loop; recurrent layers convert for target='float32', 'dynamic', "
                "'float16', 'int8' or 'int16x8')"
            )
        if spec.op_check == "edgetpu" and not strict:
            warnings.warn(message, EdgeTpuCpuFallbackWarning, stacklevel=3)  # the caller of convert
        else:
            raise CompatibilityError(message, target=target, ops=tuple(result.unsupported_ops))


def _convert_saved(path: str, target: str, samples: np.ndarray | None, options: dict[str, Any]):
    """Child side: load the `.keras` file under TensorFlow and convert it; warnings go back to the parent."""
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        missing = re.search(r"Could not locate (?:class|function) '[^']+'", str(error))
        reason = missing.group(0) if missing else f"{type(error).__name__}: {str(error).strip()[:300]}"
        raise ExportError(
            f"The model saved for conversion did not load under the TensorFlow backend ({reason}). Register custom "
            "classes with @keras.saving.register_keras_serializable in an importable module, or name the modules "
            "that define them in preload=..."
        ) from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EdgeTpuCpuFallbackWarning)
        blob = convert(model, target, samples, isolate=False, **options)  # this child is the isolation
    return blob, [str(w.message) for w in caught if issubclass(w.category, EdgeTpuCpuFallbackWarning)]
