"""All-zero weight channels given a usable quantization scale.

Why: the converter's calibrating quantizer (the one that takes unrolled recurrent graphs)
gives a channel whose weights are all zero a per-channel scale of 0. Pruning makes such
channels: a column of an LSTM's recurrent kernel (one gate of one unit) is all zero
whenever the few weights that feed it are all pruned. LiteRT's XNNPACK delegate refuses
to load a file with a zero weight scale ("unsupported scale value (0.000000) in channel
6"), so the int8 file of a pruned recurrent model would not run at all. Any positive
scale represents an all-zero channel exactly; 1.0 is used, as kstruct's QAT quantizers
do for pruned filters. A file without such a channel is returned unchanged, byte for byte.
"""

from __future__ import annotations

import numpy as np

_FILE_IDENTIFIER = b"TFL3"


def _weight_dtype(tensor_type: int, schema) -> np.dtype | None:
    return {schema.TensorType.INT8: np.dtype("int8"), schema.TensorType.INT16: np.dtype("int16")}.get(tensor_type)


def _fixed_scales(tensor, buffer, schema) -> list[float] | None:
    """The tensor's per-channel scales with zeros replaced where the channel holds only zeros, or None."""
    quantization = tensor.quantization
    if quantization is None or quantization.scale is None or len(quantization.scale) < 2:
        return None
    scales = np.array(quantization.scale, dtype="float32")
    dtype = _weight_dtype(tensor.type, schema)
    if not np.any(scales == 0) or dtype is None or buffer.data is None or tensor.shape is None:
        return None
    values = np.frombuffer(np.asarray(buffer.data, dtype="uint8").tobytes(), dtype=dtype).reshape(tensor.shape)
    by_channel = np.moveaxis(values, quantization.quantizedDimension, 0).reshape(len(scales), -1)
    empty = (scales == 0) & ~np.any(by_channel != 0, axis=1)
    if not np.any(empty):
        return None
    scales[empty] = 1.0
    return scales.tolist()


def nonzero_weight_scales(blob: bytes) -> bytes:
    """`blob` with every zero per-channel scale of an all-zero int8/int16 weight channel set to 1.0."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(blob, 0)
    changed = False
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            fixed = _fixed_scales(tensor, model.buffers[tensor.buffer], schema)
            if fixed is not None:
                tensor.quantization.scale = fixed
                changed = True
    if not changed:
        return blob
    builder = flatbuffers.Builder(len(blob) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())
