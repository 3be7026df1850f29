"""Client-side head fusion (`Layout.heads_fused_by_client`).

When every analysis of a pass fuses heads by mean, or all by the same fixed
non-negative weights, and none needs a single head, the client may fuse each
layer itself and send one head per layer, H times fewer bytes:

    F^_l = sum_h w_h A[l, h] / sum_h w_h       (w = 1 for mean fusion)

The server validates F^_l, multiplies it by sum_h w_h and computes the same
maps as for the full pass, up to rounding. Because the server then sees only
the fused rows, every head is validated here as it is fused, with the checks
the server would apply at the wire dtype, and a bad head is refused with the
server's message plus ", found by the client while fusing heads".

The rule and every message mirror the C++ library (the shared rule of the
server and the clients, and the C++ client's fusion), so both clients agree.
"""

from typing import List, Optional, Sequence

import numpy as np

from attnroll import native
from attnroll.errors import AttnrollError
from attnroll.v1 import analysis_pb2, pass_pb2

# The server's default row-sum tolerance for each wire dtype.
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 4e-3, "bf16": 2e-2}

_FOUND = ", found by the client while fusing heads"


def _g(x) -> str:
    """A number as the server's messages print it (six significant digits)."""
    return "%g" % float(x)


def _fusion_name(f: int) -> str:
    try:
        return analysis_pb2.HeadFusion.Name(f)[len("HEAD_FUSION_"):]
    except ValueError:
        return str(int(f))


def _fusion_of(a: analysis_pb2.Analysis, path: str):
    kind = a.WhichOneof("kind")
    if kind == "rollout":
        if a.rollout.HasField("gradient"):
            raise AttnrollError.invalid(
                path + ".rollout.gradient: fusing heads on the client needs an analysis without "
                "gradient (the gradient rule weights each head), got a gradient-weighted rollout")
        fusion, weights, field = a.rollout.fusion, list(a.rollout.head_weights), ".rollout"
    elif kind == "flow":
        fusion, weights, field = a.flow.fusion, list(a.flow.head_weights), ".flow"
    else:
        raise AttnrollError.invalid(
            path + ": fusing heads on the client needs a rollout, flow or validate analysis")
    if fusion not in (analysis_pb2.HEAD_FUSION_MEAN, analysis_pb2.HEAD_FUSION_WEIGHTED):
        raise AttnrollError.invalid(
            "%s%s.fusion: fusing heads on the client needs MEAN or WEIGHTED fusion, got %s"
            % (path, field, _fusion_name(fusion)))
    return fusion, weights


def client_fusion_weights(header: pass_pb2.PassHeader) -> List[float]:
    """The weights the heads are fused with, one per head of
    header.layout.num_heads (all 1 for mean fusion), when every analysis
    allows fusing on the client; AttnrollError (INVALID_ARGUMENT) naming the
    field that needs the heads otherwise. Value norms and gradients are
    properties of the layer messages: the caller checks them."""
    layout = header.layout
    if layout.HasField("encoder_decoder"):
        raise AttnrollError.invalid(
            "layout.heads_fused_by_client: not supported with layout.encoder_decoder "
            "(send the heads)")
    heads = int(layout.num_heads)
    first = None
    first_path = ""
    for i, a in enumerate(header.analyses):
        if a.WhichOneof("kind") == "validate":
            continue
        path = "analyses[%d]" % i
        fusion, weights = _fusion_of(a, path)
        field = path + (".flow" if a.WhichOneof("kind") == "flow" else ".rollout")
        if first is None:
            first, first_path = (fusion, weights), field
            continue
        f32 = lambda ws: [np.float32(w) for w in ws]  # noqa: E731 (float equality as in C++)
        same_weights = (fusion == analysis_pb2.HEAD_FUSION_MEAN
                        or f32(weights) == f32(first[1]))
        if fusion != first[0] or not same_weights:
            raise AttnrollError.invalid(
                "%s: fusing heads on the client sends one fused matrix per layer, so every "
                "analysis needs %s's fusion (%s%s), got %s"
                % (field, first_path, _fusion_name(first[0]),
                   " with the same head_weights" if first[0] == analysis_pb2.HEAD_FUSION_WEIGHTED
                   else "",
                   _fusion_name(fusion) if fusion != first[0]
                   else "WEIGHTED with other head_weights"))
    if first is None or first[0] == analysis_pb2.HEAD_FUSION_MEAN:
        return [1.0] * heads
    weights = first[1]
    if len(weights) != heads:
        raise AttnrollError.invalid(
            "%s.head_weights: expected %d weights (one per head), got %d"
            % (first_path, heads, len(weights)))
    total = 0.0
    for h, w in enumerate(weights):
        w = float(np.float32(w))
        if not np.isfinite(w) or w < 0:
            raise AttnrollError.invalid(
                "%s.head_weights[%d]: fusing heads on the client needs finite weights >= 0 "
                "(the fused rows are sent normalised), got %s" % (first_path, h, _g(w)))
        total += w
    if not total > 0:
        raise AttnrollError.invalid(
            "%s.head_weights: fusing heads on the client needs weights summing to > 0, got 0"
            % first_path)
    return [float(np.float32(w)) for w in weights]


class HeadChecks:
    """What each head is checked against while it is fused: the server's
    checks for the pass at the wire dtype."""

    def __init__(self, header: pass_pb2.PassHeader, wire: str = "fp32"):
        tol = header.row_sum_tolerance
        self.tolerance = float(np.float32(tol if tol > 0 else DEFAULT_TOLERANCE[wire]))
        self.causal = bool(header.layout.causal)
        self.valid = [int(v) for v in header.layout.valid_lengths]

    def valid_length(self, b: int, n: int) -> int:
        if not self.valid or b >= len(self.valid):
            return n
        return min(max(self.valid[b], 1), n)


def check_head(head: np.ndarray, m: int, layer: int, h: int, b: int, c: HeadChecks) -> None:
    """Validates the valid m x m block of one head [n, n] (float32) as the
    server would; AttnrollError naming layer, head, sequence, row and column
    for the first bad row."""
    block = head[:m, :m]
    finite = np.isfinite(block)
    negative = block < 0
    bad = ~finite | negative
    if c.causal:
        upper = np.triu(np.ones((m, m), dtype=bool), 1)
        bad |= upper & (block > np.float32(c.tolerance))
    sums = block.astype(np.float64).sum(axis=1)
    bad_sum = ~(np.abs(sums - 1.0) <= c.tolerance)
    bad_rows = bad.any(axis=1) | bad_sum
    if not bad_rows.any():
        return
    i = int(np.argmax(bad_rows))
    where = "attention (layer %d, head %d, sequence %d, row %d)" % (layer, h, b, i)
    if bad[i].any():
        j = int(np.argmax(bad[i]))
        v = block[i, j]
        if not finite[i, j]:
            msg = "%s: expected finite values, got %s at column %d" % (where, _g(v), j)
        elif negative[i, j]:
            msg = "%s: expected probabilities >= 0, got %s at column %d" % (where, _g(v), j)
        else:
            msg = ("%s: causal layout expects no attention above the diagonal, got %s at "
                   "column %d" % (where, _g(v), j))
    else:
        msg = ("%s: expected the row over the %d valid tokens to sum to 1 +- %s, got %s"
               % (where, m, _g(c.tolerance), _g(sums[i])))
    raise AttnrollError.invalid(msg + _FOUND)


def layer_clean(x: np.ndarray, c: HeadChecks) -> bool:
    """True when no row of any head of one layer x [B, H, n, n] (float32)
    could fail a check: every valid row sums to 1 within the tolerance (a
    NaN or an infinity fails that too) and no valid entry has its sign bit
    set (the int32 view of the bits is >= 0, so -0.0 counts as suspect).
    Two reductions over the layer, each at numpy's speed; causal passes are
    left to check_layer (their upper triangle needs a third)."""
    if c.causal:
        return False
    n = x.shape[-1]
    tol = np.float32(c.tolerance)
    one = np.float32(1.0)
    full = all(c.valid_length(s, n) == n for s in range(x.shape[0]))
    blocks = [x] if full else [x[s, :, :c.valid_length(s, n), :c.valid_length(s, n)]
                               for s in range(x.shape[0])]
    for block in blocks:
        sums = np.add.reduce(block, axis=-1, dtype=np.float32)
        np.subtract(sums, one, out=sums)
        np.abs(sums, out=sums)
        if not (sums.max(initial=np.float32(0.0)) <= tol):
            return False
        if block.view(np.int32).min() < 0:
            return False
    return True


def check_layer(x: np.ndarray, layer: int, c: HeadChecks, b: Optional[int] = None) -> None:
    """Validates every head of one layer x [B, H, n, n] (float32), or of
    sequence b only. As the C++ client: a fast float32 check of every row
    (sum, minimum, finiteness, the largest entry above the diagonal), and
    the exact check (check_head) only for the heads it flags, so only an
    exact failure refuses."""
    if b is None and layer_clean(x, c):
        return
    n = x.shape[-1]
    for s in range(x.shape[0]) if b is None else (b,):
        m = c.valid_length(s, n)
        block = x[s, :, :m, :m]
        sums = block.sum(axis=-1, dtype=np.float32)
        flagged = ~(np.abs(sums - np.float32(1.0)) <= np.float32(c.tolerance))
        flagged |= (block.min(axis=-1) < 0)
        if c.causal and m > 1:
            upper = np.triu(np.ones((m, m), dtype=bool), 1)
            flagged |= (np.where(upper, block, 0).max(axis=-1) > np.float32(c.tolerance))
        if flagged.any():
            for h in np.nonzero(flagged.any(axis=1))[0]:
                check_head(x[s, h], m, layer, int(h), s, c)


def check_layers_in_order(layers: Sequence[np.ndarray], c: HeadChecks) -> None:
    """Validates every layer [B, H, n, n] (float32) in the C++ client's
    order (sequence, then layer, then head), so the error raised is the
    first in that order."""
    for b in range(layers[0].shape[0]):
        for l, a in enumerate(layers):
            check_layer(a, l, c, b)


def fuse_native(x: np.ndarray, weights: Sequence[float], checks: Optional[HeadChecks],
                out: np.ndarray) -> Optional[bool]:
    """One layer x [B, H, n, n] fused into out [B, 1, n, n] by the native
    kernels (attnroll.native), its rows measured on the way: True when every
    valid row passed the fast check (or checks is None), False when a row
    needs the exact check, None when the native path is not available (out
    untouched). The values are fuse_layer's, bit for bit."""
    ws = [float(w) for w in weights]
    total = float(sum(ws))
    equal = all(w == ws[0] for w in ws)
    n = x.shape[-1]
    valid = None
    if checks is not None and checks.valid:
        valid = [checks.valid_length(s, n) for s in range(x.shape[0])]
    ok = native.fuse(x, None if equal else [np.float32(w / total) for w in ws], ws[0] / total,
                     valid, checks is not None and checks.causal,
                     checks.tolerance if checks is not None else float("inf"), out)
    if ok is None:
        return None
    return True if checks is None else ok


def fuse_layer(x: np.ndarray, weights: Sequence[float], layer: int,
               checks: Optional[HeadChecks] = None,
               out: Optional[np.ndarray] = None) -> np.ndarray:
    """F^ = sum_h w_h x[:, h] / sum_h w_h for one layer x [B, H, n, n]
    (float32), summed in fp32 in head order; [B, 1, n, n] (written into out
    when given, a float32 C-order array of that shape). With checks, every
    head's valid block is validated too (sequence by sequence).

    With the native library (attnroll.native) one pass does both. Otherwise
    mean fusion is one np.add.reduce over the heads (numpy adds the head
    slices one after the other, in head order) and one scaling, both in
    place; weighted fusion adds w_h / sum(w) x[:, h] head by head through
    one scratch buffer. Both give the same values bit for bit."""
    x = np.asarray(x, dtype=np.float32)
    B, H, n, _ = x.shape
    if out is None:
        out = np.empty((B, 1, n, n), dtype=np.float32)
    clean = fuse_native(x, weights, checks, out)
    if clean is not None:
        if not clean:  # raises, or the suspect rows were fine
            for b in range(B):
                check_layer(x, layer, checks, b)
        return out
    total = float(sum(float(w) for w in weights))
    if checks is not None:
        check_layer(x, layer, checks)
    acc = out[:, 0]
    ws = [float(w) for w in weights]
    if all(w == ws[0] for w in ws):
        np.add.reduce(x, axis=1, out=acc)
        np.multiply(acc, np.float32(ws[0] / total), out=acc)
        return out
    scale = [np.float32(w / total) for w in ws]
    np.multiply(x[:, 0], scale[0], out=acc)
    tmp = np.empty_like(acc)
    for h in range(1, H):
        np.multiply(x[:, h], scale[h], out=tmp)
        np.add(acc, tmp, out=acc)
    return out


def check_fusable(header: pass_pb2.PassHeader, heads: int, mode: str,
                  has_gradient: bool = False, has_value_norms: bool = False):
    """The weights to fuse with, or None to send every head, for mode
    "auto" | "off" | "on" (the C++ client's --client-fusion); "on" and a pass
    that does not allow it: AttnrollError saying why."""
    if mode not in ("auto", "off", "on"):
        raise ValueError("client_fusion: expected auto, off or on, got %r" % (mode,))
    if mode == "off" or header.layout.heads_fused_by_client:
        return None
    if mode == "auto" and heads <= 1:
        return None
    try:
        weights = client_fusion_weights(header)
        err = None
    except AttnrollError as e:
        weights, err = None, e.message
    if has_value_norms:
        err = "value_norms: fusing heads on the client needs no value norms (they scale each head)"
    elif has_gradient:
        err = "gradient: fusing heads on the client needs no gradient (the rule weights each head)"
    if err is not None:
        if mode == "auto":
            return None
        raise AttnrollError.invalid("cannot fuse heads on the client: " + err)
    if len(weights) != heads:
        raise AttnrollError.invalid("layout.num_heads: expected the attention's %d heads, got %d"
                                    % (heads, len(weights)))
    return weights
