"""A client-fused pass as the bytes of one ExplainRequest.whole_pass, each
layer fused straight into them.

Built with protobuf objects, every fused layer is copied three more times
(numpy to bytes, bytes into the message, the message serialized). Here
everything but the fused values is serialized by protobuf, each layer is
fused into a scratch buffer and copied once into the message's buffer (which
is copied once more into the bytes grpcio sends), and two threads take the
layers in turn (ctypes releases the GIL, so the second core reads its share
of the heads meanwhile). The bytes are those of
ExplainRequest(whole_pass=...).SerializeToString() exactly: protobuf writes
fields in field-number order, and so does this. tests/bench/python_client_bench.py
--ablation measures the three ways side by side.
"""

import concurrent.futures
from typing import Dict, List, Optional, Tuple

import numpy as np

from attnroll import pipeline, tensors
from attnroll.v1 import attnroll_pb2, pass_pb2, tensor_pb2


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _number(message_type, field: str) -> int:
    return message_type.DESCRIPTOR.fields_by_name[field].number


def _tag(message_type, field: str) -> bytes:
    """The key of a length-delimited field (wire type 2)."""
    return _varint(_number(message_type, field) << 3 | 2)


_WHOLE_PASS = _tag(attnroll_pb2.ExplainRequest, "whole_pass")
_HEADER = _tag(attnroll_pb2.WholePass, "header")
_LAYERS = _tag(attnroll_pb2.WholePass, "layers")
_ATTENTION = _tag(pass_pb2.LayerChunk, "attention")
_DATA = _tag(tensor_pb2.Tensor, "data")
_ATTENTION_NUMBER = _number(pass_pb2.LayerChunk, "attention")
# Tensor.data must be the last field of a Tensor for the bytes to be protobuf's.
assert _number(tensor_pb2.Tensor, "data") == max(
    f.number for f in tensor_pb2.Tensor.DESCRIPTOR.fields)


def _delimited(tag: bytes, length: int) -> bytes:
    return tag + _varint(length)


def _around_attention(chunk: pass_pb2.LayerChunk) -> Tuple[bytes, bytes]:
    """chunk (a layer message without its attention) serialized as the
    fields numbered below the attention's and those above it."""
    before, after = pass_pb2.LayerChunk(), pass_pb2.LayerChunk()
    before.CopyFrom(chunk)
    after.CopyFrom(chunk)
    for field, _ in chunk.ListFields():
        (after if field.number < _ATTENTION_NUMBER else before).ClearField(field.name)
    return before.SerializeToString(), after.SerializeToString()


def serialize(header: pass_pb2.PassHeader, p, builder: Optional[pipeline.Builder]) -> bytes:
    """The ExplainRequest of header and every layer of p (a client._Pass whose
    heads are fused here), as bytes. Each layer is checked and fused as
    p.fill would (p.attention): a bad layer raises its AttnrollError, the
    same whichever thread meets it. builder: the Client's threads (None, a
    single one, or shut down: every layer on this thread)."""
    assert p.fused, "whole_pass.serialize: the heads must be fused on the client"
    L = len(p.layers)
    wire = p.wire
    B, _, r, c = p.layers[0].shape
    data_len = B * r * c * tensors.WIRE_BYTES[wire]
    tensor = tensor_pb2.Tensor(dtype=tensors.WIRE_DTYPES[wire], shape=[B, 1, r, c])
    tensor_head = tensor.SerializeToString() + _delimited(_DATA, data_len)
    tensor_len = len(tensor_head) + data_len
    attention = _delimited(_ATTENTION, tensor_len) + tensor_head  # the same for every layer
    head = header.SerializeToString()

    segments: List[Tuple[int, bytes]] = []  # (offset in the WholePass, bytes)
    data_at: List[int] = []  # where each layer's values go
    at = 0

    def put(b: bytes) -> None:
        nonlocal at
        segments.append((at, b))
        at += len(b)

    put(_delimited(_HEADER, len(head)))
    put(head)
    for l in range(L):
        side = pass_pb2.LayerChunk()
        p.fill_side(side, l)
        before, after = _around_attention(side)
        put(_delimited(_LAYERS, len(before) + len(attention) + data_len + len(after)) + before
            + attention)
        data_at.append(at)
        at += data_len
        put(after)
    outer = _delimited(_WHOLE_PASS, at)
    base = len(outer)
    buf = bytearray(base + at)
    buf[:base] = outer
    for o, b in segments:
        buf[base + o:base + o + len(b)] = b
    dst = np.frombuffer(buf, dtype=np.uint8)
    layers = iter(range(L))  # shared: each layer is taken by whichever thread is free

    def fill() -> None:
        scratch: Dict[str, np.ndarray] = {}  # this thread's own (see _Pass.attention)
        for l in layers:
            values = tensors.wire_array(p.attention(l, scratch), wire)
            start = base + data_at[l]
            dst[start:start + data_len] = values.reshape(-1).view(np.uint8)

    other = None
    if builder is not None and builder.threads > 1 and L > 1:
        try:
            other = builder.submit(fill)
        except RuntimeError:  # the Client was closed meanwhile: this thread does it all
            other = None
    try:
        fill()
    finally:
        # Not started yet (the pool busy with other calls): nothing is left for
        # it. Running: the buffer is not handed on while it writes.
        if other is not None and not other.cancel():
            concurrent.futures.wait([other])
    error = other.exception() if other is not None and not other.cancelled() else None
    if error is not None:
        raise error
    return bytes(buf)
