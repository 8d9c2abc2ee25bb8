"""The quantized weights a TFLite file stores, read back: integer values, scales, packed bytes.

TFLite stores an INT4 tensor two values per byte, the first in the low nibble, each a
4-bit two's complement number. Reading them back is how the 4-bit targets are checked:
the values, their per-channel scales and the bytes they take, from the file itself.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tflite_export import runtime

_INTEGER_WEIGHTS = {"int4": 4, "int8": 8, "uint8": 8, "int16": 16}


def unpack_int4(raw: np.ndarray, count: int) -> np.ndarray:
    """`count` signed 4-bit values from packed bytes (low nibble first) as int8."""
    raw = np.asarray(raw, dtype=np.uint8)
    nibbles = np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(-1)[:count].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


@dataclasses.dataclass
class WeightTensor:
    """One quantized constant tensor of rank >= 2 (a kernel) as the file holds it.

    Attributes:
        name: the tensor's name in the file.
        dtype: "int4", "int8", "uint8" or "int16".
        shape: its shape (TFLite layout: FULLY_CONNECTED `(out, in)`, CONV_2D `(out, h, w, in)`).
        packed_bytes: bytes its buffer takes in the file (an int4 tensor: half its elements, rounded up).
        values: the stored integers, unpacked, in `shape`.
        scale / zero_point: one per tensor, or one per slice along `axis`.
        axis: the quantized dimension (meaningful when there are several scales).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    packed_bytes: int
    values: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int

    @property
    def bits(self) -> int:
        return _INTEGER_WEIGHTS[self.dtype]

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def dequantized(self) -> np.ndarray:
        """`(values - zero_point) * scale` as float32, broadcast along `axis`."""
        shape = [1] * len(self.shape)
        if self.per_channel:
            shape[self.axis] = -1
        scale = self.scale.reshape(shape) if self.per_channel else self.scale.reshape(())
        zero = self.zero_point.reshape(shape) if self.per_channel else self.zero_point.reshape(())
        return ((self.values.astype(np.float32) - zero) * scale).astype(np.float32)


def quantized_weights(model: bytes | str | os.PathLike) -> list[WeightTensor]:
    """Every quantized constant tensor of rank >= 2 in the file (all subgraphs), in tensor order."""
    from ai_edge_litert import schema_py_generated as schema

    blob = runtime.read_model(model)
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    fb = schema.ModelT.InitFromPackedBuf(blob, 0)
    buffers = fb.buffers or []
    found = []
    for subgraph in fb.subgraphs:
        for tensor in subgraph.tensors or []:
            dtype = type_names.get(tensor.type, "")
            shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else []))
            data = buffers[tensor.buffer].data if 0 < tensor.buffer < len(buffers) else None
            q = tensor.quantization
            if dtype not in _INTEGER_WEIGHTS or len(shape) < 2 or data is None or len(data) == 0:
                continue
            if q is None or q.scale is None or len(q.scale) == 0 or tensor.sparsity is not None:
                continue
            raw = np.asarray(data, dtype=np.uint8)
            count = int(np.prod(shape))
            if dtype == "int4":
                values = unpack_int4(raw, count)
            else:
                values = raw.view({"int8": np.int8, "uint8": np.uint8, "int16": np.int16}[dtype])[:count]
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            found.append(WeightTensor(
                name=name,
                dtype=dtype,
                shape=shape,
                packed_bytes=int(raw.nbytes),
                values=values.reshape(shape),
                scale=np.asarray(q.scale, dtype=np.float32),
                zero_point=np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], dtype=np.int64),
                axis=int(q.quantizedDimension or 0),
            ))
    return found
