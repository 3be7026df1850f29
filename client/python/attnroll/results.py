"""What the calls return: numpy maps with the result's metadata."""

from typing import Any, Dict, List, Optional

import numpy as np
from google.protobuf.message import Message

from attnroll import tensors
from attnroll.v1 import attnroll_pb2, audit_pb2, tensor_pb2


def to_python(msg: Any) -> Any:
    """A protobuf message as plain Python: a Tensor becomes a numpy array, a
    MaybeValue its value or None (its note goes to the enclosing dict's
    "notes"), a GridPoint (row, col), enums their names, messages dicts."""
    if isinstance(msg, tensor_pb2.Tensor):
        return tensors.decode(msg) if msg.dtype else None
    if isinstance(msg, audit_pb2.GridPoint):
        return (msg.row, msg.col)
    if not isinstance(msg, Message):
        return msg
    out: Dict[str, Any] = {}
    notes: Dict[str, str] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = {k: to_python(v) for k, v in value.items()}
        elif field.label == field.LABEL_REPEATED:
            out[field.name] = [to_python(v) for v in value]
        elif field.message_type is not None and field.message_type.name == "MaybeValue":
            out[field.name] = value.value if value.defined else None
            if value.note:
                notes[field.name] = value.note
        elif field.message_type is not None:
            if field.message_type.name == "Tensor" or msg.HasField(field.name):
                out[field.name] = to_python(value)
            else:
                out[field.name] = None
        elif field.enum_type is not None:
            out[field.name] = field.enum_type.values_by_number[value].name
        else:
            out[field.name] = value
    if notes:
        out["notes"] = notes
    return out


class AnalysisOutput:
    """The result of one analysis for the whole batch.

    Attributes:
        name: the analysis's name, echoed.
        maps: one float32 array per sequence, [k, n_b - P] or [k, h, w] (a
            leading [layers] axis with per_layer, [H] with fusion "none").
        rows: the rows read out; layers: with per_layer, the layers.
        path: the algorithm that ran ("row", "chain", "flow", ...).
        warnings: what the server wants you to know.
        aggregate_maps, encoder_maps, decoder_maps: see analysis.proto.
    """

    def __init__(self, r):
        self.name: str = r.name
        self.maps: List[np.ndarray] = [tensors.decode(t) for t in r.maps]
        self.rows: List[int] = list(r.rows)
        self.layers: List[int] = list(r.layers)
        self.path: str = r.path
        self.warnings: List[str] = list(r.warnings)
        self.aggregate_maps = [tensors.decode(t) for t in r.aggregate_maps]
        self.encoder_maps = [tensors.decode(t) for t in r.encoder_maps]
        self.decoder_maps = [tensors.decode(t) for t in r.decoder_maps]

    def __repr__(self):
        shapes = ", ".join(str(tuple(m.shape)) for m in self.maps)
        return "AnalysisOutput(name=%r, path=%r, maps=[%s], warnings=%r)" % (
            self.name, self.path, shapes, self.warnings)


class Explanation:
    """The results of one pass.

    Attributes:
        results: one AnalysisOutput per analysis, in order.
        maps: the first analysis's maps, one array per sequence.
        map: the first analysis's map of sequence 0 (the leading axis of
            one read-out row squeezed: [n - P] or [h, w]).
        heads_fused_by_client: the heads were fused here before sending.
        wire: the wire dtype used; sent_bytes: attention and gradient bytes
            of one send.
        sends: sends of the whole pass (more than 1: sent again after
            UNAVAILABLE, see Client's attempts).
        messages: gRPC messages of one send on explain (1: the pass went
            whole as one unary call; header + layer messages otherwise),
            None elsewhere.
        request_id, server_version, total_seconds, compute_seconds.
    """

    def __init__(self, resp: attnroll_pb2.ExplainResponse, wire: str = "fp32",
                 sent_bytes: int = 0, sends: int = 1, messages: Optional[int] = None):
        self.results = [AnalysisOutput(r) for r in resp.results]
        self.request_id: str = resp.request_id
        self.server_version: str = resp.server_version
        self.heads_fused_by_client: bool = resp.heads_fused_by_client
        self.total_seconds: float = resp.timing.total_seconds
        self.compute_seconds: float = resp.timing.compute_seconds
        self.wire = wire
        self.sent_bytes = sent_bytes
        self.sends = sends
        self.messages = messages

    @property
    def maps(self) -> List[np.ndarray]:
        return self.results[0].maps if self.results else []

    @property
    def map(self) -> Optional[np.ndarray]:
        if not self.maps:
            return None
        m = self.maps[0]
        return m[0] if m.ndim >= 2 and m.shape[0] == 1 else m

    def __repr__(self):
        return "Explanation(results=%r, heads_fused_by_client=%r, wire=%r)" % (
            self.results, self.heads_fused_by_client, self.wire)


class PairResult:
    """ExplainPair: baseline and candidate Explanations and the comparisons
    of their first analysis's maps (dicts, see to_python)."""

    def __init__(self, resp: attnroll_pb2.PairResponse, wire: str, sent_bytes: int,
                 sends: int = 1):
        self.baseline = Explanation(resp.baseline, wire, sent_bytes // 2, sends)
        self.candidate = Explanation(resp.candidate, wire, sent_bytes // 2, sends)
        self.sends = sends
        self.comparisons: List[Dict[str, Any]] = [to_python(c) for c in resp.comparisons]

    def __repr__(self):
        return "PairResult(baseline=%r, candidate=%r, comparisons=%d)" % (
            self.baseline, self.candidate, len(self.comparisons))


class AuditResult:
    """Audit: items (one dict per item result, completion order; a refused
    item has "error" {code, code_name, message}) and report (a dict of the
    AuditReport, mean maps as numpy arrays)."""

    def __init__(self, items: List[Dict[str, Any]], report: Optional[Dict[str, Any]]):
        self.items = items
        self.report = report

    def __repr__(self):
        return "AuditResult(items=%d, report=%s)" % (
            len(self.items), "yes" if self.report is not None else "none")
