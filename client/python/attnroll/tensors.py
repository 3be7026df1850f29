"""Arrays to and from `attnroll.v1.Tensor`: numpy or torch in, numpy out.

Wire dtypes: "fp32", "fp16", "bf16". fp32 is rounded to fp16 or bf16 to
nearest, ties to even (numpy's float16 cast, or the native library's: the
same bits; bf16 by integer rounding of the fp32 bits), as the C++ client does.
"""

from typing import Any, Optional

import numpy as np

from attnroll import native
from attnroll.v1 import tensor_pb2

WIRE_DTYPES = {"fp32": tensor_pb2.DTYPE_FP32, "fp16": tensor_pb2.DTYPE_FP16,
               "bf16": tensor_pb2.DTYPE_BF16}


WIRE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def source_wire(x: Any) -> str:
    """The wire dtype that keeps x's values exactly: "fp16" for float16,
    "bf16" for a torch bfloat16 tensor, "fp32" otherwise."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return "fp32"
    name = str(dt)
    if name in ("float16", "torch.float16"):
        return "fp16"
    if name == "torch.bfloat16":
        return "bf16"
    return "fp32"


def to_numpy(x: Any, dtype=np.float32) -> np.ndarray:
    """x (numpy array, torch tensor on any device, nested list) as a C-order
    numpy array of dtype (float32 by default; None keeps float16 as is)."""
    if type(x).__module__.startswith("torch"):
        x = x.detach()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.cpu().numpy()
    a = np.asarray(x)
    if dtype is None:
        if a.dtype != np.float16:
            a = a.astype(np.float32, copy=False)
    else:
        a = a.astype(dtype, copy=False)
    return np.ascontiguousarray(a)


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """The bf16 bit patterns (uint16) of float32 a, rounded to nearest, ties
    to even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def encode(x: Any, wire: Optional[str] = None, shape=None) -> tensor_pb2.Tensor:
    """A Tensor holding x at the wire dtype (None: source_wire(x)), with
    shape (default x's)."""
    t = tensor_pb2.Tensor()
    encode_into(t, x, wire, shape)
    return t


def encode_into(t: tensor_pb2.Tensor, x: Any, wire: Optional[str] = None, shape=None) -> None:
    """Sets t (e.g. a field of a request being built, so the bytes are
    copied once) to x at the wire dtype, as encode()."""
    if wire is None:
        wire = source_wire(x)
    if wire not in WIRE_DTYPES:
        raise ValueError("wire: expected one of fp32, fp16, bf16, got %r" % (wire,))
    a = to_numpy(x, dtype=None)
    shape = list(a.shape if shape is None else shape)
    data = wire_array(a, wire).tobytes()
    t.dtype = WIRE_DTYPES[wire]
    del t.shape[:]
    t.shape.extend(int(d) for d in shape)
    t.data = data


def wire_array(a: np.ndarray, wire: str) -> np.ndarray:
    """a (float32 or float16, C order) as the little-endian array whose bytes
    are its `Tensor.data` at the wire dtype (a itself when it already is)."""
    if wire == "fp32":
        return a.astype("<f4", copy=False)
    if wire == "fp16":
        bits = native.encode_half(a) if a.dtype == np.float32 else None
        return a.astype("<f2", copy=False) if bits is None else bits
    return bf16_bits(a.astype(np.float32, copy=False)).astype("<u2", copy=False)


def decode(t: tensor_pb2.Tensor) -> np.ndarray:
    """A Tensor as a writable numpy float32 array of its shape."""
    shape = tuple(int(s) for s in t.shape)
    if t.dtype == tensor_pb2.DTYPE_FP32:
        a = np.frombuffer(t.data, dtype="<f4")
    elif t.dtype == tensor_pb2.DTYPE_FP16:
        a = np.frombuffer(t.data, dtype="<f2").astype(np.float32)
    elif t.dtype == tensor_pb2.DTYPE_BF16:
        a = (np.frombuffer(t.data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise ValueError("tensor dtype %d is not a wire dtype" % t.dtype)
    return a.astype(np.float32).reshape(shape)
