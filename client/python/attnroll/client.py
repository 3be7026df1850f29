"""The attnroll gRPC client: arrays in, numpy maps out."""

import itertools
import queue
import time
import uuid
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np

from attnroll import balancing, fusion, options, pipeline, tensors, whole_pass
from attnroll.errors import AttnrollError, code_from_number
from attnroll.results import AuditResult, Explanation, PairResult, to_python
from attnroll.v1 import attnroll_pb2, attnroll_pb2_grpc, audit_pb2, pass_pb2

Array = Any  # a numpy array or a torch tensor
# The payload an Explain message of several layers aims at (_Pass.layers_per_message).
BATCH_BYTES = 512 * 1024
# A client-fused pass up to this size goes whole in one message, as a unary
# call (ExplainRequest.whole_pass): grpcio spends about 0.6 ms more on a
# client-streaming call than on a unary one (a thread per call, a hand-off per
# message), more than overlapping fusion with sending saves at this size.
WHOLE_PASS_BYTES = 4 * 1024 * 1024
ProgressCallback = Callable[[int, int, int], None]

# As the C++ client's channel: no message size cap, 1 MiB HTTP/2 frames, and
# 8 MiB of write buffer and receive window, so a layer message is written
# without waiting for flow-control round trips.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1),
                    ("grpc.max_send_message_length", -1),
                    ("grpc.http2.max_frame_size", 1 << 20),
                    ("grpc.http2.write_buffer_size", 8 << 20),
                    ("grpc.http2.lookahead_bytes", 8 << 20)]


def _read(v: Union[str, bytes, None]) -> Optional[bytes]:
    if v is None or isinstance(v, bytes):
        return v
    with open(v, "rb") as f:
        return f.read()


def _layers(attentions, what: str) -> Tuple[List[np.ndarray], bool]:
    """Per-layer arrays [B, H, r, c] (float32, or float16 kept as is) and
    whether the input was unbatched ([H, r, c] per layer)."""
    if isinstance(attentions, (list, tuple)):
        items = [tensors.to_numpy(a, dtype=None) for a in attentions]
    else:
        arr = tensors.to_numpy(attentions, dtype=None)
        if arr.ndim not in (4, 5):
            raise AttnrollError.invalid(
                "%s: expected per-layer attention, an array [L, H, n, n] or [L, B, H, n, n], "
                "got shape %s" % (what, list(arr.shape)))
        items = list(arr)
    if not items:
        raise AttnrollError.invalid("%s: expected at least one layer, got none" % what)
    first = items[0].shape
    if len(first) not in (3, 4):
        raise AttnrollError.invalid("%s[0]: expected [H, n, n] or [B, H, n, n], got shape %s"
                                    % (what, list(first)))
    for i, a in enumerate(items):
        if a.shape != first:
            raise AttnrollError.invalid("%s[%d]: expected shape %s (that of layer 0), got %s"
                                        % (what, i, list(first), list(a.shape)))
    unbatched = len(first) == 3
    return ([a[None] if unbatched else a for a in items]), unbatched


def _per_layer(values, n_layers: int, what: str, unbatched: bool) -> Optional[List[np.ndarray]]:
    """Optional per-layer side inputs (gradients, value norms, residual
    weights), a leading batch axis added to unbatched input."""
    if values is None:
        return None
    items = list(values) if isinstance(values, (list, tuple)) else list(tensors.to_numpy(values, None))
    if len(items) != n_layers:
        raise AttnrollError.invalid("%s: expected %d layers (one per attention layer), got %d"
                                    % (what, n_layers, len(items)))
    out = []
    for a in items:
        a = tensors.to_numpy(a, dtype=None)
        out.append(a[None] if unbatched else a)
    return out


class _Pass:
    """The layer messages of one pass, encoded (and fused when allowed).

    With eager=True every head is checked here, before anything is sent
    (the C++ client's order: sequence, layer, head). With eager=False
    (explain's pipelined path) each layer is checked and fused as its
    message is built by fill(), so the fusion of layer l + 1 runs while
    layer l is on the wire and in the server; a layer that fails the exact
    check makes fill() check every layer in the C++ client's order, so the
    error raised is the same either way."""

    def __init__(self, header: pass_pb2.PassHeader, layers: List[np.ndarray], wire: str,
                 client_fusion: str, gradients=None, value_norms=None, residual_weights=None,
                 stacks: Optional[List[int]] = None, indices: Optional[List[int]] = None,
                 eager: bool = True):
        self.header = header
        weights = fusion.check_fusable(header, int(layers[0].shape[1]), client_fusion,
                                       gradients is not None, value_norms is not None)
        self.weights = weights
        self.checks: Optional[fusion.HeadChecks] = None
        self._scratch: Dict[str, np.ndarray] = {}
        if weights is not None:
            self.checks = fusion.HeadChecks(header, wire)
            layers = [np.asarray(a, dtype=np.float32) for a in layers]
            if eager:
                for a in layers:
                    if not fusion.layer_clean(a, self.checks):
                        fusion.check_layers_in_order(layers, self.checks)
                        break
                self.checks = None  # checked: fill() only fuses
            header.layout.heads_fused_by_client = True
        self.fused = weights is not None
        self.layers, self.wire = layers, wire
        self.gradients, self.value_norms, self.residual_weights = (gradients, value_norms,
                                                                   residual_weights)
        self.stacks, self.indices = stacks, indices
        per_head = 1 if self.fused else int(layers[0].shape[1])
        self.sent_bytes = sum(a.size // a.shape[1] * per_head for a in layers) * \
            tensors.WIRE_BYTES[wire]
        if gradients is not None:
            self.sent_bytes += sum(g.size for g in gradients) * tensors.WIRE_BYTES[wire]

    def attention(self, l: int, scratch: Optional[Dict[str, np.ndarray]] = None) -> np.ndarray:
        """Layer l as sent: fused into a scratch buffer (reused by the next
        call: the message copies it) when the heads are fused here. Each
        request generator passes its own `scratch`: after an UNAVAILABLE,
        gRPC's thread may still run the previous send's generator while the
        next send's fuses."""
        a = self.layers[l]
        if self.weights is None:
            return a
        B, _, n, _ = a.shape
        store = self._scratch if scratch is None else scratch
        buf = store.get("fused")
        if buf is None or buf.shape != (B, 1, n, n):
            buf = store["fused"] = np.empty((B, 1, n, n), dtype=np.float32)
        # Native: measured and fused in one pass; numpy: measured, then fused.
        fused = fusion.fuse_native(a, self.weights, self.checks, buf)
        if self.checks is not None:
            clean = fusion.layer_clean(a, self.checks) if fused is None else fused
            if not clean:  # the exact check names the first bad row, in the C++ client's order
                try:
                    for b in range(a.shape[0]):
                        fusion.check_layer(a, l, self.checks, b)
                except AttnrollError:
                    fusion.check_layers_in_order(self.layers, self.checks)
                    raise
        return buf if fused is not None else fusion.fuse_layer(a, self.weights, l, out=buf)

    def fill(self, c: pass_pb2.LayerChunk, l: int,
             scratch: Optional[Dict[str, np.ndarray]] = None) -> pass_pb2.LayerChunk:
        """Sets c (a field of the request being built) to layer message l
        (fused in `scratch`, a request generator's own; see attention)."""
        tensors.encode_into(c.attention, self.attention(l, scratch), self.wire)
        return self.fill_side(c, l)

    def fill_side(self, c: pass_pb2.LayerChunk, l: int) -> pass_pb2.LayerChunk:
        """Sets c's fields other than the attention to layer message l's."""
        c.layer = l if self.indices is None else self.indices[l]
        if self.stacks is not None:
            c.stack = self.stacks[l]
        if self.gradients is not None:
            tensors.encode_into(c.gradient, self.gradients[l], self.wire)
        if self.value_norms is not None:
            tensors.encode_into(c.value_norms, self.value_norms[l], "fp32")
        if self.residual_weights is not None:
            tensors.encode_into(c.residual_weights, self.residual_weights[l], "fp32")
        return c

    def layers_per_message(self, cap: int = 0) -> int:
        """Layers per Explain message: with the heads fused here, as many as
        fit in about BATCH_BYTES (LayerBatch) and within `cap` (the server's
        max_message_bytes; 0: unknown), at least one; one otherwise (as the
        C++ client). gRPC's cost per message is about that of ~100 KB of
        payload on loopback, so small layers go a few at a time."""
        if not self.fused:
            return 1
        target = BATCH_BYTES if cap <= 0 else min(BATCH_BYTES, cap - 1024 - 256)
        per_layer = max(1, self.sent_bytes // max(1, len(self.layers))) + 64
        return max(1, min(len(self.layers), target // per_layer))

    def whole_pass_bytes(self) -> int:
        """About the size of the pass as one message (ExplainRequest.whole_pass):
        the layers' bytes, each layer's framing and the header."""
        return self.sent_bytes + 64 * len(self.layers) + self.header.ByteSize() + 1024

    def requests(self, make, field: str):
        """make() -> a request; yields one per layer with its `field` filled."""
        scratch: Dict[str, np.ndarray] = {}
        for l in range(len(self.layers)):
            req = make()
            self.fill(getattr(req, field), l, scratch)
            yield req

    @property
    def chunks(self) -> List[pass_pb2.LayerChunk]:
        """Every layer message (as standalone messages)."""
        return [self.fill(pass_pb2.LayerChunk(), l) for l in range(len(self.layers))]


class Client:
    """A client of attnroll-server.

    Args:
        address: "host:port" of the server, or a pool of replicas:
            "dns:///name:port" (every address the name resolves to) or a
            static list "ipv4:a:p1,b:p2" ("ipv6:[a]:p1,[b]:p2").
        tls: False (plain text), True (TLS with the system's roots), a
            grpc.ChannelCredentials, or a dict with root_certificates,
            private_key, certificate_chain (bytes or file paths) and
            optionally server_name (the name the certificate is checked for).
        token: a bearer token sent as "authorization: Bearer <token>" on
            every call (gRPC's access-token credentials over TLS; the same
            call metadata on a plain-text channel).
        timeout: seconds allowed for each call (None: no deadline).
        lb: "auto" (default: round_robin for a dns: target or a list of
            more than one address, pick_first for "host:port"),
            "round_robin" (a connection to every address, calls in turn over
            the ready ones) or "pick_first".
        attempts: attempts per call on UNAVAILABLE, 1..5 (None: 3 with
            round_robin, 1 with pick_first). gRPC's retry policy re-attempts
            a call while it still holds all the call sent (256 KiB, its
            per-call retry buffer) and no response has begun; explain,
            explain_encoder_decoder and explain_pair of in-memory arrays
            (which the client holds until the call returns) send the whole
            pass again as a new call (another replica with round_robin) when
            it still ends UNAVAILABLE, after 0.1 s, 0.2 s, ..., within the
            one timeout. Streams (progress, audit, stream_pass) are not
            re-sent. The service config is .service_config.

    Every method raises AttnrollError (gRPC code and message) when the call
    is refused or fails, also for bad input found before sending.
    """

    def __init__(self, address: str, *, tls: Any = False, token: Optional[str] = None,
                 timeout: Optional[float] = None, channel_options: Sequence = (),
                 lb: str = "auto", attempts: Optional[int] = None):
        balancing.check(lb, attempts)
        self.address = address
        self.timeout = timeout
        self.lb_policy = balancing.effective_lb(address, lb)
        self.attempts = balancing.effective_attempts(address, lb, attempts)
        self.service_config = balancing.service_config(address, lb, attempts)
        opts = (list(_CHANNEL_OPTIONS) + balancing.channel_options(address, lb, attempts)
                + list(channel_options))
        self._metadata: Tuple = ()
        if tls:
            if isinstance(tls, grpc.ChannelCredentials):
                creds = tls
            elif isinstance(tls, dict):
                tls = dict(tls)
                name = tls.pop("server_name", None)
                if name:
                    opts.append(("grpc.ssl_target_name_override", name))
                creds = grpc.ssl_channel_credentials(**{k: _read(v) for k, v in tls.items()})
            else:
                creds = grpc.ssl_channel_credentials()
            if token:
                creds = grpc.composite_channel_credentials(
                    creds, grpc.access_token_call_credentials(token))
            self._channel = grpc.secure_channel(address, creds, opts)
        else:
            if token:
                self._metadata = (("authorization", "Bearer " + token),)
            self._channel = grpc.insecure_channel(address, opts)
        self._stub = attnroll_pb2_grpc.AttnrollServiceStub(self._channel)
        self._fuser = pipeline.Builder()
        # Explain as a unary call, for a pass sent whole (ExplainRequest.whole_pass):
        # the request is already its bytes (whole_pass.serialize).
        self._explain_whole = self._channel.unary_unary(
            "/attnroll.v1.AttnrollService/Explain",
            response_deserializer=attnroll_pb2.ExplainResponse.FromString)
        self._server_wire: Optional[Tuple[int, FrozenSet[str]]] = None  # once asked (_wire_info)

    # -- plumbing -------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel."""
        self._fuser.close()
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout=None, future=False):
        kw = dict(timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        try:
            return method.future(request, **kw) if future else method(request, **kw)
        except grpc.RpcError as e:
            raise AttnrollError.from_rpc_error(e) from None

    def _send_pass(self, method, make_requests, timeout=None):
        """One pass over a client-streaming method: make_requests() -> a
        fresh request iterator for each send. A send that ends UNAVAILABLE
        is made again, up to self.attempts sends, after 0.1 s, 0.2 s, ...
        within the one timeout. Returns (response, sends)."""
        total = self.timeout if timeout is None else timeout
        deadline = None if total is None else time.monotonic() + total
        backoff, sends = 0.1, 0
        while True:
            sends += 1
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return method(make_requests(), timeout=left, metadata=self._metadata), sends
            except grpc.RpcError as e:
                again = (e.code() == grpc.StatusCode.UNAVAILABLE and sends < self.attempts
                         and (deadline is None or time.monotonic() + backoff < deadline))
                if not again:
                    raise AttnrollError.from_rpc_error(e) from None
            time.sleep(backoff)
            backoff *= 2

    def _wire_info(self, timeout: Optional[float] = None) -> Tuple[int, FrozenSet[str]]:
        """The server's max_message_bytes and the ExplainRequest forms it
        takes (GetServerInfo, asked once per Client, within `timeout`);
        (0, none) when it cannot be had: then layers go one per message. A
        server that cannot say (UNIMPLEMENTED, PERMISSION_DENIED, ...) is
        not asked again; one that is unavailable or slow is, next time."""
        if self._server_wire is None:
            try:
                info = self._call(self._stub.GetServerInfo, attnroll_pb2.GetServerInfoRequest(),
                                  timeout)
            except AttnrollError as e:
                if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self._server_wire = (0, frozenset())
                return 0, frozenset()
            self._server_wire = (int(info.limits.max_message_bytes), frozenset(info.request_forms))
        return self._server_wire

    # -- calls ----------------------------------------------------------------

    def server_info(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The server's version, limits, analyses and wire dtypes (a dict)."""
        return to_python(self._call(self._stub.GetServerInfo,
                                    attnroll_pb2.GetServerInfoRequest(), timeout))

    def _single_pass(self, attentions, gradients, kw, what="attentions", eager=True):
        """(header, _Pass) of a single-stack pass from explain's arguments."""
        analyses = kw.pop("analyses", None)
        wire = kw.pop("wire", None)
        mode = kw.pop("client_fusion", "auto")
        value_norms = kw.pop("value_norms", None)
        residual_weights = kw.pop("residual_weights", None)
        a_opts, l_opts, rest = options.split(kw)
        if rest:
            raise TypeError("unknown option(s): %s" % ", ".join(sorted(rest)))
        layers, unbatched = _layers(attentions, what)
        if wire is None:
            wire = "fp16" if layers[0].dtype == np.float16 else tensors.source_wire(
                attentions[0] if isinstance(attentions, (list, tuple)) else attentions)
        grads = _per_layer(gradients, len(layers), "gradients", unbatched)
        if analyses is None:
            analyses = [options.analysis(gradient=grads is not None, **a_opts)]
        else:
            if a_opts:
                raise TypeError("pass analysis options inside analyses=[...], not beside it: %s"
                                % ", ".join(sorted(a_opts)))
            analyses = [a if not isinstance(a, dict) else
                        options.analysis(gradient=grads is not None, **a) for a in analyses]
        B, H, n, _ = layers[0].shape
        layout = pass_pb2.Layout(num_layers=len(layers), num_heads=H, num_tokens=n, batch_size=B)
        header = options.header(layout, analyses, **l_opts)
        p = _Pass(header, layers, wire, mode, grads,
                  _per_layer(value_norms, len(layers), "value_norms", unbatched),
                  _per_layer(residual_weights, len(layers), "residual_weights", unbatched),
                  eager=eager)
        return header, p, wire

    def explain(self, attentions, *, gradients=None, progress: Optional[ProgressCallback] = None,
                timeout: Optional[float] = None, **kw) -> Explanation:
        """Explains one forward pass.

        Args:
            attentions: post-softmax attention, one entry per layer (input
                side first): a list of [H, n, n] or [B, H, n, n] arrays (numpy
                or torch; float32, float16 or bfloat16), or one array
                [L, H, n, n] / [L, B, H, n, n].
            gradients: d(target logit)/d(attention), the same shapes; the
                rollout is then gradient-weighted (gradient_rule "chefer" by
                default, or "vit_explain").
            progress: progress(analysis, done, total) while attention flow
                runs (the pass then goes over ExplainStream).
            analyses: several analyses, each a dict of analysis options (or an
                attnroll.v1 Analysis); otherwise the analysis options below.
            wire: "fp32", "fp16" or "bf16" (default: the input's own dtype
                for float16 / bfloat16, fp32 otherwise).
            client_fusion: "auto" (default: fuse heads here whenever the
                analyses allow it), "off" or "on" (fuse or refuse).
            value_norms, residual_weights: per-layer side inputs.
            prefix_tokens, grid=(h, w), valid_lengths, causal,
            row_sum_tolerance, request_id: the pass's layout.
            method, fusion, head_weights, residual, rows, scaling, ...: the
                analysis (see attnroll.options).

        Returns:
            Explanation: .map, .maps, .results, .heads_fused_by_client, ...
        """
        header, p, wire = self._single_pass(attentions, gradients, kw, eager=progress is not None)
        if progress is not None:
            return self._explain_stream(header, p, wire, progress, timeout)
        return self._explain_pipelined(header, p, wire, timeout)

    def _explain_pipelined(self, header, p: _Pass, wire: str, timeout) -> Explanation:
        """One pass over Explain whose layer messages are built (checked,
        fused, encoded) as gRPC asks for them: gRPC's sending thread runs
        this generator, so layer l + 1 is fused while layer l is written to
        the socket and folded in by the server. A layer refused here ends the
        stream early (the server refuses the short pass and frees it) and
        the client's refusal is raised; a send that ends UNAVAILABLE is made
        again by _send_pass, the layers fused anew. A client-fused pass up to
        WHOLE_PASS_BYTES goes whole instead (_explain_whole_pass), and
        layers go in batches only to a server that lists them (GetServerInfo)."""
        cap, forms = self._wire_info(timeout) if p.fused else (0, frozenset())
        L = len(p.layers)
        if "whole_pass" in forms and p.whole_pass_bytes() <= min(WHOLE_PASS_BYTES, cap):
            return self._explain_whole_pass(header, p, wire, timeout)
        per = p.layers_per_message(cap) if "layers" in forms else 1
        count = (L + per - 1) // per  # layer messages
        failure: List[BaseException] = []

        def requests():
            if failure:
                return
            scratch: Dict[str, np.ndarray] = {}  # this send's own (see _Pass.attention)

            def build(k: int):
                """The k-th message of layers: layers [k per, (k + 1) per)."""
                r = attnroll_pb2.ExplainRequest()
                if per == 1:
                    p.fill(r.layer, k, scratch)
                else:
                    for l in range(k * per, min(L, (k + 1) * per)):
                        p.fill(r.layers.layers.add(), l, scratch)
                return r

            ahead = None
            try:
                ahead = self._fuser.ahead(build, count) if p.fused else None
                yield attnroll_pb2.ExplainRequest(header=header)
                for k in range(count):
                    try:
                        r = ahead.result(k) if ahead is not None else build(k)
                    except BaseException as e:  # surfaced after the call (gRPC would hide it)
                        failure.append(e)
                        return
                    yield r
            finally:
                if ahead is not None:
                    ahead.cancel()

        try:
            resp, sends = self._send_pass(self._stub.Explain, requests, timeout)
        except AttnrollError:
            if failure:
                raise failure[0] from None
            raise
        if failure:
            raise failure[0]
        return Explanation(resp, wire, p.sent_bytes, sends, messages=1 + count)

    def _explain_whole_pass(self, header, p: _Pass, wire: str, timeout) -> Explanation:
        """A client-fused pass that fits one message, sent whole as a unary
        call: each layer checked and fused straight into the message's bytes
        (whole_pass.serialize), so a refused layer raises before anything is
        sent (as from the pipelined path); the same bytes are sent again
        after UNAVAILABLE by _send_pass."""
        request = whole_pass.serialize(header, p, self._fuser)
        resp, sends = self._send_pass(self._explain_whole, lambda: request, timeout)
        return Explanation(resp, wire, p.sent_bytes, sends, messages=1)

    def _explain_stream(self, header, p, wire, progress, timeout):
        rid = header.request_id or uuid.uuid4().hex
        reqs = itertools.chain(
            [attnroll_pb2.StreamRequest(request_id=rid, header=header)],
            p.requests(lambda: attnroll_pb2.StreamRequest(request_id=rid), "layer"),
            [attnroll_pb2.StreamRequest(request_id=rid, end=attnroll_pb2.PassEnd())])
        result = None
        try:
            for r in self._call(self._stub.ExplainStream, reqs, timeout):
                kind = r.WhichOneof("message")
                if kind == "progress":
                    progress(r.progress.analysis, r.progress.done, r.progress.total)
                elif kind == "error":
                    raise AttnrollError(code_from_number(r.error.code), r.error.message)
                elif kind == "result":
                    result = Explanation(r.result, wire, p.sent_bytes)
        except grpc.RpcError as e:
            raise AttnrollError.from_rpc_error(e) from None
        if result is None:
            raise AttnrollError(grpc.StatusCode.INTERNAL, "ExplainStream ended without a result")
        return result

    def rollout(self, attentions, **kw) -> Explanation:
        """explain(attentions, method="rollout", **kw)."""
        return self.explain(attentions, method="rollout", **kw)

    def flow(self, attentions, *, progress: Optional[ProgressCallback] = None, **kw) -> Explanation:
        """explain(attentions, method="flow", progress=progress, **kw): exact
        attention flow; progress(analysis, done, total) as max flows are solved."""
        return self.explain(attentions, method="flow", progress=progress, **kw)

    def explain_encoder_decoder(self, encoder, decoder_self, cross, *, encoder_gradients=None,
                                decoder_gradients=None, cross_gradients=None,
                                wire: Optional[str] = None, timeout: Optional[float] = None,
                                encoder_valid_lengths=None, decoder_valid_lengths=None,
                                prefix_tokens: int = 0, grid=None, causal: bool = False,
                                row_sum_tolerance: float = 0.0, request_id: str = "",
                                **analysis_kw) -> Explanation:
        """Relevance of encoder tokens for decoder tokens.

        encoder: [L_e] x [H, n_enc, n_enc] (or with a leading B per layer);
        decoder_self: [L_d] x [H, n_dec, n_dec]; cross: [L_d] x [H, n_dec, n_enc].
        With composition "rules" (default) every stack needs its gradients.
        Analysis options: composition, fusion, head_weights, residual,
        no_renormalize, rows, scaling, sink_tokens, return_encoder,
        return_decoder, name."""
        enc, unb = _layers(encoder, "encoder")
        dec, _ = _layers(decoder_self, "decoder_self")
        crs, _ = _layers(cross, "cross")
        if len(dec) != len(crs):
            raise AttnrollError.invalid("cross: expected %d layers (one per decoder layer), got %d"
                                        % (len(dec), len(crs)))
        wire = wire or "fp32"
        grads = None
        if encoder_gradients is not None or decoder_gradients is not None or \
                cross_gradients is not None:
            ge = _per_layer(encoder_gradients, len(enc), "encoder_gradients", unb)
            gd = _per_layer(decoder_gradients, len(dec), "decoder_gradients", unb)
            gc = _per_layer(cross_gradients, len(crs), "cross_gradients", unb)
            if ge is None or gd is None or gc is None:
                raise AttnrollError.invalid(
                    "gradients: expected encoder_gradients, decoder_gradients and "
                    "cross_gradients together, got only some")
            grads = list(ge)
            for k in range(len(dec)):
                grads += [gd[k], gc[k]]
        layers, stacks, idx = list(enc), [pass_pb2.STACK_ENCODER] * len(enc), list(range(len(enc)))
        for k in range(len(dec)):
            layers += [dec[k], crs[k]]
            stacks += [pass_pb2.STACK_DECODER_SELF, pass_pb2.STACK_DECODER_CROSS]
            idx += [k, k]
        B, H = enc[0].shape[0], enc[0].shape[1]
        layout = pass_pb2.Layout(num_heads=H, batch_size=B)
        ed = layout.encoder_decoder
        ed.encoder_layers, ed.encoder_tokens = len(enc), enc[0].shape[-1]
        ed.decoder_layers, ed.decoder_tokens = len(dec), dec[0].shape[-1]
        ed.encoder_valid_lengths.extend(encoder_valid_lengths or [])
        ed.decoder_valid_lengths.extend(decoder_valid_lengths or [])
        header = options.header(layout, [options.encoder_decoder_analysis(**analysis_kw)],
                                prefix_tokens=prefix_tokens, grid=grid, causal=causal,
                                row_sum_tolerance=row_sum_tolerance, request_id=request_id)
        p = _Pass(header, layers, wire, "off", grads, stacks=stacks, indices=idx)
        resp, sends = self._send_pass(
            self._stub.Explain,
            lambda: itertools.chain([attnroll_pb2.ExplainRequest(header=header)],
                                    p.requests(attnroll_pb2.ExplainRequest, "layer")),
            timeout)
        return Explanation(resp, wire, p.sent_bytes, sends)

    def compare(self, a: Array, b: Array, *, grid=None, top_k: int = 0, top_mass: float = 0.0,
                region=None, ssim_window: int = 0,
                timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Compares saliency maps a and b ([n], [k, n], [h, w] or [k, h, w]):
        one dict per pair of maps with spearman, kendall_tau_b, pearson,
        cosine, top_k_iou, l1, l2, js_divergence, ssim, emd, com_shift,
        region shares (None where undefined, the reason in "notes") and the
        difference map."""
        req = audit_pb2.CompareRequest(
            a=tensors.encode(a, "fp32"), b=tensors.encode(b, "fp32"),
            options=options.compare_options(grid, top_k, top_mass, region, ssim_window))
        return [to_python(c) for c in self._call(self._stub.Compare, req, timeout).comparisons]

    def explain_pair(self, baseline, candidate, *, compare: Optional[Dict[str, Any]] = None,
                     baseline_gradients=None, candidate_gradients=None,
                     timeout: Optional[float] = None, **kw) -> PairResult:
        """Explains one input under a baseline and a candidate model (the
        same layout and analyses as explain) and compares the first
        analysis's maps (compare: options as for compare())."""
        kw2 = dict(kw)
        header, pb, wire = self._single_pass(baseline, baseline_gradients, kw, "baseline")
        kw2["wire"] = wire
        _, pc, _ = self._single_pass(candidate, candidate_gradients, kw2, "candidate")
        if pb.fused != pc.fused:
            raise AttnrollError.invalid("candidate: expected the baseline's shape and options")
        ph = attnroll_pb2.PairHeader()
        getattr(ph, "pass").CopyFrom(header)  # "pass" is a Python keyword
        ph.compare.CopyFrom(options.compare_options(**(compare or {})))
        def reqs():
            scratch_b: Dict[str, np.ndarray] = {}  # this send's own (see _Pass.attention)
            scratch_c: Dict[str, np.ndarray] = {}
            yield attnroll_pb2.PairRequest(header=ph)
            for l in range(len(pb.layers)):  # the sides interleaved, layer by layer
                r = attnroll_pb2.PairRequest()
                pb.fill(r.baseline, l, scratch_b)
                yield r
                r = attnroll_pb2.PairRequest()
                pc.fill(r.candidate, l, scratch_c)
                yield r
        resp, sends = self._send_pass(self._stub.ExplainPair, reqs, timeout)
        return PairResult(resp, wire, pb.sent_bytes + pc.sent_bytes, sends)

    def audit(self, items: Iterable[Dict[str, Any]], *, map_length: int = 0, grid=None,
              compare: Optional[Dict[str, Any]] = None,
              thresholds: Optional[Dict[str, float]] = None, worst_items: int = 0,
              on_item: Optional[Callable[[Dict[str, Any]], None]] = None,
              timeout: Optional[float] = None) -> AuditResult:
        """Audits a candidate against a baseline over a dataset.

        items: an iterable (consumed while results stream back) of dicts:
            {"id", "baseline", "candidate", "group"?}: two maps, or
            {"id", "baseline_attention", "candidate_attention", "group"?,
             ...explain options}: two attention passes.
        compare: comparison options (grid, top_k, top_mass, region,
        ssim_window; grid defaults to grid); thresholds: DriftThresholds as a
        dict (min_spearman, max_l1, ...). on_item(result) is called as each
        item's result arrives. Returns AuditResult(items, report)."""
        copts = dict(compare or {})
        if grid is not None:
            copts.setdefault("grid", grid)
        hdr = audit_pb2.AuditHeader(map_length=int(map_length), worst_items=int(worst_items),
                                    compare=options.compare_options(**copts),
                                    thresholds=options.drift_thresholds(thresholds))
        failure: List[Exception] = []

        def requests():
            yield audit_pb2.AuditRequest(header=hdr)
            try:
                for it in items:
                    it = dict(it)
                    iid, group = str(it.pop("id")), str(it.pop("group", ""))
                    if "baseline_attention" in it:
                        base, cand = it.pop("baseline_attention"), it.pop("candidate_attention")
                        it.setdefault("client_fusion", "off")
                        header, pb, wire = self._single_pass(base, None, dict(it), "baseline")
                        _, pc, _ = self._single_pass(cand, None, dict(it, wire=wire), "candidate")
                        yield audit_pb2.AuditRequest(pass_begin=audit_pb2.AuditPassBegin(
                            id=iid, group=group, **{"pass": header}))
                        for side, p in ((False, pb), (True, pc)):
                            for l in range(len(p.layers)):
                                r = audit_pb2.AuditRequest()
                                r.pass_layer.candidate = side
                                p.fill(r.pass_layer.layer, l)
                                yield r
                        yield audit_pb2.AuditRequest(pass_end=audit_pb2.AuditPassEnd())
                    else:
                        yield audit_pb2.AuditRequest(item=audit_pb2.AuditItem(
                            id=iid, group=group,
                            baseline=tensors.encode(np.ravel(tensors.to_numpy(it["baseline"])),
                                                    "fp32"),
                            candidate=tensors.encode(np.ravel(tensors.to_numpy(it["candidate"])),
                                                     "fp32")))
                yield audit_pb2.AuditRequest(end=audit_pb2.AuditEnd())
            except Exception as e:  # surfaced after the call (gRPC would hide it)
                failure.append(e)

        results, report = [], None
        try:
            for r in self._call(self._stub.Audit, requests(), timeout):
                if r.WhichOneof("message") == "item":
                    d = to_python(r.item)
                    results.append(d)
                    if on_item is not None:
                        on_item(d)
                else:
                    report = to_python(r.report)
        except grpc.RpcError as e:
            if failure:
                raise failure[0]
            raise AttnrollError.from_rpc_error(e) from None
        if failure:
            raise failure[0]
        return AuditResult(results, report)

    def stream_pass(self, num_layers: int, *, wire: str = "fp32", client_fusion: str = "auto",
                    analyses=None, on_sent: Optional[Callable[[int], None]] = None,
                    timeout: Optional[float] = None, **kw) -> "PassStream":
        """A pass sent layer by layer as the model computes it (e.g. from a
        forward hook): call send() for each layer in order, then finish().
        The header goes out with the first layer (heads, tokens and batch
        are read from it). on_sent(layer) is called once gRPC has written
        each layer message. Options as for explain (no gradients: they exist
        only after the backward; use explain with gradients= then)."""
        a_opts, l_opts, rest = options.split(kw)
        if rest:
            raise TypeError("unknown option(s): %s" % ", ".join(sorted(rest)))
        if analyses is None:
            analyses = [options.analysis(**a_opts)]
        else:
            analyses = [a if not isinstance(a, dict) else options.analysis(**a) for a in analyses]
        return PassStream(self, int(num_layers), analyses, l_opts, wire, client_fusion, on_sent,
                          self.timeout if timeout is None else timeout)


class PassStream:
    """One pass streamed layer by layer over an Explain call (see
    Client.stream_pass). Use as a context manager: leaving it on an
    exception cancels the call."""

    def __init__(self, client: Client, num_layers: int, analyses, layout_opts, wire: str,
                 client_fusion: str, on_sent, timeout):
        self._client = client
        self._num_layers = num_layers
        self._analyses = analyses
        self._layout_opts = layout_opts
        self.wire = wire
        self._mode = client_fusion
        self._on_sent = on_sent
        self._timeout = timeout
        self._queue: "queue.Queue" = queue.Queue()
        self._future = None
        self._weights = None
        self._checks = None
        self._layer = 0
        self.sent_bytes = 0
        self.header: Optional[pass_pb2.PassHeader] = None
        self._closed = False

    def _requests(self):
        sent = -1  # index of the layer message whose write completed
        while True:
            item = self._queue.get()
            if item is None:
                return
            yield item
            # gRPC asks for the next message once the previous one was written.
            if item.WhichOneof("message") == "layer":
                sent = item.layer.layer
                if self._on_sent is not None:
                    self._on_sent(sent)

    def _raise_if_failed(self):
        if self._future is not None and self._future.done():
            try:
                self._future.result()
            except grpc.RpcError as e:
                self._closed = True
                raise AttnrollError.from_rpc_error(e) from None

    def send(self, attention: Array, value_norms=None, residual_weights=None) -> None:
        """Sends the next layer's attention, [H, n, n] or [B, H, n, n]."""
        if self._closed:
            raise AttnrollError(grpc.StatusCode.FAILED_PRECONDITION, "the pass is closed")
        a = tensors.to_numpy(attention, dtype=None)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4:
            raise AttnrollError.invalid("attention (layer %d): expected [H, n, n] or "
                                        "[B, H, n, n], got shape %s" % (self._layer, list(a.shape)))
        if self.header is None:
            B, H, n, _ = a.shape
            layout = pass_pb2.Layout(num_layers=self._num_layers, num_heads=H, num_tokens=n,
                                     batch_size=B)
            self.header = options.header(layout, self._analyses, **self._layout_opts)
            self._weights = fusion.check_fusable(self.header, H, self._mode, False,
                                                 value_norms is not None)
            if self._weights is not None:
                self._checks = fusion.HeadChecks(self.header, self.wire)
                self.header.layout.heads_fused_by_client = True
            self._queue.put(attnroll_pb2.ExplainRequest(header=self.header))
            self._future = self._client._call(self._client._stub.Explain, self._requests(),
                                              self._timeout, future=True)
        self._raise_if_failed()
        l = self._layer
        try:
            if self._weights is not None:
                a = fusion.fuse_layer(a, self._weights, l, self._checks)
        except AttnrollError:
            self.cancel()
            raise
        req = attnroll_pb2.ExplainRequest()
        c = req.layer
        c.layer = l
        tensors.encode_into(c.attention, a, self.wire)
        if value_norms is not None:
            tensors.encode_into(c.value_norms, value_norms, "fp32")
        if residual_weights is not None:
            tensors.encode_into(c.residual_weights, residual_weights, "fp32")
        self.sent_bytes += len(c.attention.data)
        self._queue.put(req)
        self._layer += 1

    def finish(self) -> Explanation:
        """Half-closes the call and returns the pass's Explanation."""
        if self._future is None:
            raise AttnrollError.invalid("attention: expected %d layers, got none"
                                        % self._num_layers)
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        try:
            resp = self._future.result()
        except grpc.RpcError as e:
            raise AttnrollError.from_rpc_error(e) from None
        return Explanation(resp, self.wire, self.sent_bytes)

    def cancel(self) -> None:
        """Abandons the pass (the server frees its memory)."""
        self._closed = True
        self._queue.put(None)
        if self._future is not None:
            self._future.cancel()

    def __enter__(self) -> "PassStream":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Left on an exception, or without finish(): nobody will read the
        # result, so the call is cancelled (the server frees the pass).
        if exc_type is not None or not self._closed:
            self.cancel()
