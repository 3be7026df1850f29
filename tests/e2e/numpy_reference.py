"""The numpy reference of the end-to-end suites in this directory: the math
attnroll computes, written once, and the input generators the suites feed it.

A suite puts this directory on sys.path (as it does for e2e_harness) and
imports the module:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy_reference as nr  # noqa: E402

Pure numpy.  The reference is written the slow, obvious way (float64, explicit
loops over sequences, layers, heads and rows, the full m x m chain) so that it
shares no structure with the server's one-pass row read-out.  Every suite
compares against these functions; each formula is stated in its docstring.

Conventions, in the order a pass applies them (one sequence of valid length
m; A[l, h] the attention of layer l, head h, G[l, h] its gradient):

  * padding (valid lengths): sequence b is cropped to its first m_b tokens
    before any math; its maps cover tokens P..m_b-1 and are zero-filled from
    m_b - P up to n - P.
  * value norms v[l, h, j]: A'[l,h][i, j] = A[l,h][i, j] v[l,h,j], rows
    divided by their sums (a zero row stays 0), before anything else.
  * fusion over heads of X[h]: mean / max / min; weighted = sum_h w_h X[h]
    (weights as given, not normalised).
  * per-layer matrix F_l:  plain rollout F_l = fuse_h(A[l,h]);
    chefer F_l = fuse_h(max(0, G[l,h] A[l,h])) (= Ab_l);
    vit_explain F_l = max(0, fuse_h(G[l,h] A[l,h])).  Gradient l goes with
    attention layer l.
  * pruning of F_l (discard_ratio, threshold, mass, top_k; see prune()).
  * residual: chefer At_l = I + F_l (rows renormalised with grad_normalize
    only; the residual, the residual weights and --no-renorm are ignored);
    otherwise At_l[i, :] = (1 - a_{l,i}) F_l[i, :] + a_{l,i} e_i (a the scalar
    residual, default 0.5, or the residual weights [L] / [L, n] of absolute
    layer l), then rows with a positive sum divided by it unless
    renormalisation is off.
  * chain over the layer range [first, last]: R_first = At_first,
    R_l = At_l @ R_{l-1}; per-layer output returns every R_l of the range.
  * read-out: rows (default row 0), "mean" (mean over the valid rows) or
    "last" (row m - 1); sink K zeroes x[0:K] and divides by the sum; drop the
    first P columns; scale (none / max / minmax / sum) the valid part only;
    then zero fill to n - P (the fill is not part of the scaled map); reshape
    to (h, w) with a grid.
  * output shape: [k, n-P] (or [k, h, w]); [Lsel, ...] per layer; [H, ...]
    for head-specific rollout (fusion "none"); a leading B when the input is
    5-D (even for B == 1).
  * head-specific rollout (fusion "none"): every head h is its own one-head
    model (the rules, pruning, residual and renormalisation per head);
    --aggregate-out fuses the maps as returned over heads (aggregate_heads).
  * attention flow: max flows over the layered graph of the fused layers
    (fused_layers; the graph itself is built by the flow suite with networkx).
  * encoder-decoder: encoder_decoder_rules (Chefer et al. ICCV 2021, rules
    6-10) and encoder_decoder_rollout.
  * wire: fp16 rounds to IEEE half, bf16 rounds to nearest even on the top 16
    bits of the float32 pattern; the reference is fed the rounded inputs.
"""

import numpy as np

# --------------------------------------------------------------------------
# Wire rounding and parameter precision.
# --------------------------------------------------------------------------


def round_fp16(x):
    """x as float32 rounded to IEEE half precision and back (what --wire fp16
    sends)."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def round_bf16(x):
    """Round-to-nearest-even of the fp32 bit pattern u to its top 16 bits:
    (u + 0x7FFF + bit16(u)) & 0xFFFF0000 (what --wire bf16 sends)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def wire_round(x, wire):
    """x as the server receives it over --wire WIRE: fp32 (unchanged), fp16
    or bf16 rounding.  None stays None."""
    if x is None or wire == "fp32":
        return x
    if wire == "fp16":
        return round_fp16(x)
    if wire == "bf16":
        return round_bf16(x)
    raise ValueError(wire)


def as_proto_float(x):
    """A parameter as the server sees it when it travels as a proto float:
    float(float32(x))."""
    return float(np.float32(x))


# --------------------------------------------------------------------------
# Input generators.
# --------------------------------------------------------------------------


def softmax(x, axis=-1):
    """exp(x - max(x)) / sum(exp(x - max(x))) along axis."""
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _padded_attention(rng, L, H, n, batch, valid_lengths, temp_range, valid_block):
    """float32 [L, H, n, n] (or [B, L, H, n, n]): per sequence b (valid length
    m_b), layer and head, in this order of draws: a temperature uniform in
    temp_range, the m_b x m_b block valid_block(rng, temp, m_b) (padded
    columns of valid rows stay 0) and, when m_b < n, padded rows of
    row-stochastic junk over all n columns (softmax of 3 N(0, 1))."""
    B = 1 if batch is None else batch
    out = np.zeros((B, L, H, n, n), dtype=np.float64)
    for b in range(B):
        m = n if valid_lengths is None else valid_lengths[b]
        for l in range(L):
            for h in range(H):
                temp = rng.uniform(*temp_range)
                out[b, l, h, :m, :m] = valid_block(rng, temp, m)
                if m < n:
                    out[b, l, h, m:, :] = softmax(3.0 * rng.standard_normal((n - m, n)))
    out = out.astype(np.float32)
    return out[0] if batch is None else out


def make_attention(rng, L, H, n, batch=None, valid_lengths=None):
    """Row-stochastic float32 attention [L, H, n, n] (or [B, L, H, n, n]).

    Rows are softmaxes of Gaussian logits scaled by a per-(layer, head)
    temperature in [1, 6], so most rows are peaked.  With valid_lengths the
    top-left m_b x m_b block of sequence b is row-stochastic, padded columns
    of valid rows are exactly 0, and padded rows hold arbitrary
    row-stochastic junk over all n columns.
    """
    def block(rng, temp, m):
        return softmax(temp * rng.standard_normal((m, m)))
    return _padded_attention(rng, L, H, n, batch, valid_lengths, (1.0, 6.0), block)


def make_causal_attention(rng, L, H, n, batch=None, valid_lengths=None):
    """Lower-triangular row-stochastic float32 attention: row i is a softmax
    over columns j <= i of Gaussian logits scaled by a per-(layer, head)
    temperature in [1, 4].  With valid_lengths, padded rows hold non-causal
    junk over all n columns (the server validates valid rows only) and padded
    columns of valid rows are 0."""
    def block(rng, temp, m):
        out = np.zeros((m, m))
        for i in range(m):
            out[i, : i + 1] = softmax(temp * rng.standard_normal(i + 1))
        return out
    return _padded_attention(rng, L, H, n, batch, valid_lengths, (1.0, 4.0), block)


def make_mixed_attention(rng, L, H, n, diffuse_rows):
    """float32 [L, H, n, n]: rows in `diffuse_rows` are nearly uniform in every
    head (softmax of 0.05 N(0, 1)), the others sharply peaked (logit + 6) on
    one column, the same for all heads of a layer."""
    out = np.zeros((L, H, n, n), dtype=np.float64)
    for l in range(L):
        peaks = rng.integers(0, n, size=n)
        for h in range(H):
            for i in range(n):
                if i in diffuse_rows:
                    out[l, h, i] = softmax(0.05 * rng.standard_normal(n))
                else:
                    logits = rng.standard_normal(n)
                    logits[peaks[i]] += 6.0
                    out[l, h, i] = softmax(logits)
    return out.astype(np.float32)


def iid_attention(rng, shape, scale=1.0):
    """float32 attention of any shape [..., q, k]: every row a softmax of
    scale * N(0, 1) logits, drawn as one rng.normal(size=shape)."""
    return softmax(scale * rng.normal(size=shape)).astype(np.float32)


def uniform_attention(L, H, n):
    """float32 [L, H, n, n] with every entry 1/n."""
    return np.full((L, H, n, n), 1.0 / n, dtype=np.float32)


def structured_attention(rng, L, H, n, sink=0.6):
    """float32 [L, H, n, n] softmax attention over N(0, 1) logits plus, by
    kind (l + h) mod 3: a sink on token 0 (+ 4 sink + 2 on column 0), a self
    head (+ 4 on the diagonal) or a local head (- 2 |i - j|); layer L // 2
    adds + 6 on columns 1 and 2 (a bottleneck).  Attention flows through it
    are not the trivial column bound."""
    att = np.empty((L, H, n, n))
    for l in range(L):
        for h in range(H):
            logits = rng.normal(size=(n, n))
            kind = (l + h) % 3
            if kind == 0:
                logits[:, 0] += 4.0 * sink + 2.0  # attention sink on token 0
            elif kind == 1:
                logits += 4.0 * np.eye(n)  # self head
            else:
                idx = np.arange(n)
                logits -= 2.0 * np.abs(idx[:, None] - idx[None, :])  # local head
            if l == L // 2:
                logits[:, 1:3] += 6.0  # bottleneck through tokens 1 and 2
            att[l, h] = softmax(logits)
    return att.astype(np.float32)


def half_grid_attention(rng, grid, side, L=2, H=2):
    """ViT-like float32 [L, H, n, n], n = 1 + grid * grid (a CLS token, then
    the patches row-major): softmax of 0.5 N(0, 1) logits, + 3 on the patches
    of the left (column < grid / 2) or right half of the grid."""
    n = 1 + grid * grid
    logits = 0.5 * rng.normal(size=(L, H, n, n))
    cols = np.arange(grid * grid)
    half = (cols % grid < grid // 2) if side == "left" else (cols % grid >= grid // 2)
    logits[:, :, :, 1:][..., half] += 3.0
    return softmax(logits).astype(np.float32)


def make_gradient(rng, shape, scale=1.0):
    """float32 gradient of the given shape: scale * N(0, 1)."""
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# --------------------------------------------------------------------------
# One layer: value norms, fusion, gradient rules, pruning, residual.
# --------------------------------------------------------------------------


def value_weighted(A, v):
    """A: [H, rows, keys], v: [H, keys] (float64) -> A'[h, i, j] = A[h, i, j] v[h, j],
    each row divided by its sum; a row whose sum is 0 stays 0."""
    H, rows, _ = A.shape
    out = np.zeros_like(A)
    for h in range(H):
        for i in range(rows):
            row = A[h, i] * v[h]
            s = row.sum()
            if s > 0:
                out[h, i] = row / s
    return out


def fuse_heads(X, fusion, weights=None):
    """X: [H, ...] float64 (heads of one layer [H, q, k], or per-head maps)
    -> X[0].shape: mean = (sum_h X[h]) / H, max / min elementwise over h,
    weighted = sum_h w_h X[h] (w as given, not normalised)."""
    H = X.shape[0]
    if fusion == "mean":
        out = np.zeros(X.shape[1:])
        for h in range(H):
            out += X[h]
        return out / H
    if fusion == "max":
        out = X[0].copy()
        for h in range(1, H):
            out = np.maximum(out, X[h])
        return out
    if fusion == "min":
        out = X[0].copy()
        for h in range(1, H):
            out = np.minimum(out, X[h])
        return out
    if fusion == "weighted":
        assert len(weights) == H
        out = np.zeros(X.shape[1:])
        for h in range(H):
            out += float(weights[h]) * X[h]
        return out
    raise ValueError(fusion)


def layer_relevance(a, g=None, rule=None, fusion="mean", weights=None):
    """F of one layer from its heads a [H, q, k] and gradient g (float64):
    rule None: fuse_h(a[h]); "chefer": fuse_h(max(0, g[h] a[h])) (= Ab);
    "vit_explain": max(0, fuse_h(g[h] a[h]))."""
    if rule is None:
        return fuse_heads(a, fusion, weights)
    if rule == "chefer":
        return fuse_heads(np.maximum(0.0, g * a), fusion, weights)
    if rule == "vit_explain":
        return np.maximum(0.0, fuse_heads(g * a, fusion, weights))
    raise ValueError(rule)


def _rel_gap(x, y):
    """Relative distance of two values a float32 rounding must not swap."""
    scale = max(abs(x), abs(y))
    return abs(x - y) / scale if scale > 0 else 0.0


def prune(F, discard_ratio=0.0, threshold=0.0, mass=0.0, top_k=0, renorm=False,
          margins=None, info=None):
    """Pruning of one fused m x m matrix F (float64), then the row rule.
    Returns (pruned F, number of emptied rows).

    The steps that are enabled (> 0) run in this order, each on the result of
    the previous one:
      1. discard_ratio R: k = floor(R * m * m) (R a double, as Python's
         int(m * m * ratio)); the k lowest entries of the whole matrix (ties:
         lower flat row-major index first) are zeroed, except flat index 0,
         which is never zeroed (one fewer if it is among the k; then
         info["corner_in_discard"] is set).
      2. threshold T: per row, entries < T are zeroed.
      3. mass P: per row with total > 0, sort ascending (stable), cumulative
         sum / total; keep the entries whose cumulative share > 1 - P.
      4. top_k K: per row keep the K largest (ties: lower column kept).
    T and P are used at float32 precision (they travel as proto floats).
    Then per row: if its sum > 0 and renorm, it is divided by its sum; if its
    sum is 0 but it had mass before pruning, it becomes e_i and counts as
    emptied.

    margins (a list) receives the relative gap of every decision a float32
    rounding could flip (k-th vs (k+1)-th lowest, |x - T| / T, |share -
    (1 - P)|, K-th vs (K+1)-th largest); a caller asserts they are not tiny.
    """
    if margins is None:
        margins = []
    if info is None:
        info = {}
    m, cols = F.shape  # square in use; the self-test also feeds single rows
    F = F.copy()
    had_mass = [F[i].sum() > 0 for i in range(m)]

    # 1. discard_ratio over the whole matrix.
    if discard_ratio > 0:
        # The ratio travels as a double (Python's float), as vit-explain's
        # int(m * m * ratio): 0.7 of 100 entries is 70.
        k = int(np.floor(float(discard_ratio) * m * cols))
        if k > 0:
            flat = F.reshape(-1)
            order = sorted(range(m * cols), key=lambda idx: (flat[idx], idx))
            if k < m * cols and flat[order[k - 1]] != flat[order[k]]:
                margins.append(_rel_gap(flat[order[k - 1]], flat[order[k]]))
            lowest = order[:k]
            if 0 in lowest:
                info["corner_in_discard"] = True
            for idx in lowest:
                if idx != 0:
                    flat[idx] = 0.0
            F = flat.reshape(m, cols)

    T = as_proto_float(threshold)
    P = as_proto_float(mass)
    for i in range(m):
        row = F[i]
        # 2. threshold.
        if threshold > 0:
            for j in range(cols):
                if row[j] != 0.0:
                    margins.append(abs(row[j] - T) / T)
                if row[j] < T:
                    row[j] = 0.0
        # 3. mass (DINO): keep entries whose ascending cumulative share > 1 - P.
        if mass > 0:
            total = row.sum()
            if total > 0:
                order = sorted(range(cols), key=lambda j: (row[j], j))  # stable ascending
                cum = 0.0
                drop = []
                for t, j in enumerate(order):
                    cum += row[j]
                    share = cum / total
                    margins.append(abs(share - (1.0 - P)))
                    if share > 1.0 - P:
                        if t > 0 and row[order[t - 1]] != row[j]:
                            margins.append(_rel_gap(row[order[t - 1]], row[j]))
                        break
                    drop.append(j)
                for j in drop:
                    row[j] = 0.0
        # 4. top_k: keep the K largest, ties to the lower column.
        if top_k > 0 and top_k < cols:
            order = sorted(range(cols), key=lambda j: (-row[j], j))
            if row[order[top_k - 1]] != row[order[top_k]]:
                margins.append(_rel_gap(row[order[top_k - 1]], row[order[top_k]]))
            for j in order[top_k:]:
                row[j] = 0.0
        F[i] = row

    emptied = 0
    for i in range(m):
        s = F[i].sum()
        if s > 0:
            if renorm:
                F[i] = F[i] / s
        elif had_mass[i]:
            F[i] = 0.0
            F[i, i] = 1.0
            emptied += 1
    return F, emptied


def residual_alphas(residual, residual_weights, l, m):
    """Residual weight a_{l,i} of each of the m query rows of layer l (the
    absolute layer index): the scalar residual, or residual_weights[l] ([L])
    or residual_weights[l, :m] ([L, n]) of one sequence."""
    if residual_weights is None:
        return np.full(m, float(residual))
    rw = np.asarray(residual_weights, dtype=np.float64)
    if rw.ndim == 1:
        return np.full(m, rw[l])
    return rw[l, :m].copy()


def residual_layer(F, alpha, renorm=True):
    """At[i, :] = (1 - alpha_i) F[i, :] + alpha_i e_i (alpha a scalar or one
    weight per row), then, if renorm, every row with sum > 0 divided by its
    sum."""
    m = F.shape[0]
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (m,))
    At = np.zeros((m, m))
    for i in range(m):
        At[i] = (1.0 - alpha[i]) * F[i]
        At[i, i] += alpha[i]
    if renorm:
        for i in range(m):
            s = At[i].sum()
            if s > 0:
                At[i] = At[i] / s
    return At


def chefer_layer(Ab, grad_normalize=False):
    """Chefer's At = I + Ab; with grad_normalize every row divided by its
    sum.  (No residual weight, no --no-renorm.)"""
    At = np.eye(Ab.shape[0]) + Ab
    if grad_normalize:
        At = At / At.sum(axis=1, keepdims=True)
    return At


def fused_layers(att, residual=0.5, fusion="mean", weights=None):
    """The per-layer matrices of one sequence att [L, H, n, n]: At_l =
    residual_layer(fuse_h(att[l, h]), residual) with renormalised rows.  The
    attention flow graph has an edge (l-1, j) -> (l, i) of capacity
    At_l[i, j]."""
    return [residual_layer(fuse_heads(att[l].astype(np.float64), fusion, weights), residual)
            for l in range(att.shape[0])]


# --------------------------------------------------------------------------
# The chain, the read-out, the whole pass.
# --------------------------------------------------------------------------


PRUNE_STEPS = ("discard_ratio", "threshold", "mass", "top_k")
# The published place of each pruning step: discard_ratio (vit-explain),
# threshold and mass (DINO) on the fused F before the residual; top_k (top-k
# rollout) on At after it.
PUBLISHED_PLACEMENT = {"discard_ratio": "before", "threshold": "before", "mass": "before",
                       "top_k": "after"}


def rollout_chain(a, g=None, rule=None, grad_normalize=False, fusion="mean", weights=None,
                  residual=0.5, residual_weights=None, renorm=True, layers=None,
                  prune_kw=None, placement=None, renorm_before_residual=False,
                  margins=None, info=None):
    """One rollout chain of one sequence over heads a [L, H', m, m] (float64;
    H' = 1 for a head of --fusion none) and gradient g (same shape, with a
    rule).  Per layer l of [first, last] (layers; default all):
      F   = layer_relevance
      F'  = prune(F) with the steps placed "before" (placement: step ->
            "before" | "after", default PUBLISHED_PLACEMENT), rows divided by
            their sums only with renorm_before_residual
      At  = chefer_layer(F') or residual_layer(F', residual_alphas)
      At' = prune(At) with the steps placed "after", rows renormalised
    where "renormalised" follows the rule (--grad-normalize for chefer,
    renorm otherwise); R_first = At_first, R_l = At_l @ R_{l-1}.
    Returns ([R_first, ..., R_last], emptied rows)."""
    L, m = a.shape[0], a.shape[-1]
    first, last = (0, L - 1) if layers is None else layers
    prune_kw = prune_kw or {}
    place = dict(PUBLISHED_PLACEMENT, **(placement or {}))
    before = {k: v for k, v in prune_kw.items() if v > 0 and place[k] == "before"}
    after = {k: v for k, v in prune_kw.items() if v > 0 and place[k] == "after"}
    row_rule = grad_normalize if rule == "chefer" else renorm
    chain, R, emptied = [], None, 0
    for l in range(first, last + 1):
        F = layer_relevance(a[l], None if g is None else g[l], rule, fusion, weights)
        if before:
            F, e = prune(F, renorm=row_rule and renorm_before_residual, margins=margins, info=info,
                         **before)
            emptied += e
        if rule == "chefer":
            At = chefer_layer(F, grad_normalize)
        else:
            At = residual_layer(F, residual_alphas(residual, residual_weights, l, m), renorm)
        if after:
            At, e = prune(At, renorm=row_rule, margins=margins, info=info, **after)
            emptied += e
        R = At if R is None else At @ R
        chain.append(R)
    return chain, emptied


def scale_map(x, scale):
    """x: one 1-D map (prefix dropped, padding not included).  none: x;
    max: x / max (x if max <= 0); minmax: (x - min) / (max - min), all zero if
    max == min; sum: x / sum (x if sum <= 0)."""
    if scale == "none":
        return x
    if scale == "max":
        mx = x.max()
        return x / mx if mx > 0 else x
    if scale == "minmax":
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if scale == "sum":
        s = x.sum()
        return x / s if s > 0 else x
    raise ValueError(scale)


def read_out(chain, per_layer, rows, m, n, prefix=0, sink=0, scale="none", grid=None):
    """Maps of one sequence of valid length m (of n) from its chain: of R_last
    ([k, n-P] or [k, h, w]), or of every R_l with per_layer ([Lsel, ...]).
    Rows: indices, "mean" (mean over the m rows) or "last" (row m - 1).  Per
    selected row x: sink K > 0 zeroes x[0:K] and divides by the sum (if > 0);
    the first `prefix` columns are dropped; scale_map; zero fill from m - P to
    n - P; reshape to grid."""
    mats = chain if per_layer else [chain[-1]]
    per = []
    for Rm in mats:
        if rows == "mean":
            sel = Rm.mean(axis=0, keepdims=True)
        elif rows == "last":
            sel = Rm[[m - 1], :]
        else:
            sel = Rm[list(rows), :]
        full = np.zeros((sel.shape[0], n - prefix))
        for r in range(sel.shape[0]):
            x = sel[r].copy()
            if sink > 0:
                x[:sink] = 0.0
                s = x.sum()
                if s > 0:
                    x = x / s
            x = x[prefix:]
            full[r, : m - prefix] = scale_map(x, scale)
        if grid is not None:
            full = full.reshape(sel.shape[0], grid[0], grid[1])
        per.append(full)
    return np.stack(per) if per_layer else per[0]


def rollout(att, grad=None, rule=None, grad_normalize=False, fusion="mean", weights=None,
            residual=0.5, renorm=True, layers=None, per_layer=False, rows=(0,), prefix=0,
            grid=None, scale="none", valid_lengths=None, discard_ratio=0.0, threshold=0.0,
            mass=0.0, top_k=0, sink=0, residual_weights=None, value_norms=None,
            prune_placement=None, renorm_before_residual=False, margins=None, info=None):
    """The maps of one `explain` pass of att ([L, H, n, n] or [B, L, H, n, n],
    gradient grad of the same shape with rule "chefer" or "vit_explain",
    residual_weights [L] / [L, n] and value_norms [L, H, n] with the same
    leading B).  Per sequence: crop to the valid length m, value_weighted,
    rollout_chain, read_out.  fusion "none": every head h is its own one-head
    model (mean over that one head) and the maps are stacked on an H axis.
    Pruning: each step in its published place unless prune_placement says
    otherwise (see rollout_chain).
    Returns (maps, emptied rows per sequence, summed over layers and heads).
    margins / info: see prune()."""
    if margins is None:
        margins = []
    if info is None:
        info = {}
    att = np.asarray(att)
    batched = att.ndim == 5
    if not batched:
        att = att[None]
        if grad is not None:
            grad = np.asarray(grad)[None]
        if residual_weights is not None:
            residual_weights = np.asarray(residual_weights)[None]
        if value_norms is not None:
            value_norms = np.asarray(value_norms)[None]
    B, L, H, n, _ = att.shape
    assert (grad is None) == (rule is None)
    prune_kw = dict(discard_ratio=discard_ratio, threshold=threshold, mass=mass, top_k=top_k)
    chain_kw = dict(rule=rule, grad_normalize=grad_normalize, residual=residual, renorm=renorm,
                    layers=layers, prune_kw=prune_kw, placement=prune_placement,
                    renorm_before_residual=renorm_before_residual, margins=margins, info=info)
    read_kw = dict(prefix=prefix, sink=sink, scale=scale, grid=grid)
    outs, emptied_per_seq = [], []
    for b in range(B):
        m = n if valid_lengths is None else int(valid_lengths[b])
        a = att[b, :, :, :m, :m].astype(np.float64)
        g = None if grad is None else grad[b, :, :, :m, :m].astype(np.float64)
        if value_norms is not None:
            v = np.asarray(value_norms[b], dtype=np.float64)[:, :, :m]
            a = np.stack([value_weighted(a[l], v[l]) for l in range(L)])
        rw = None if residual_weights is None else residual_weights[b]
        if fusion == "none":
            # Head h alone, as a one-head model (the mean over one head is that head).
            maps, emptied = [], 0
            for h in range(H):
                chain, e = rollout_chain(a[:, h:h + 1], None if g is None else g[:, h:h + 1],
                                         fusion="mean", residual_weights=rw, **chain_kw)
                emptied += e
                maps.append(read_out(chain, per_layer, rows, m, n, **read_kw))
            outs.append(np.stack(maps))
        else:
            chain, emptied = rollout_chain(a, g, fusion=fusion, weights=weights,
                                           residual_weights=rw, **chain_kw)
            outs.append(read_out(chain, per_layer, rows, m, n, **read_kw))
        emptied_per_seq.append(emptied)
    out = np.stack(outs) if batched else outs[0]
    return out, emptied_per_seq


def rollout_maps(att, **kw):
    """rollout(att, **kw) without the emptied-row counts: the maps only."""
    return rollout(att, **kw)[0]


def aggregate_heads(maps, how="mean", weights=None, batched=False):
    """--aggregate-out of --fusion none maps ([H, ...] or [B, H, ...]), taken
    over the maps as returned (after sink, prefix drop, scaling and zero
    fill): fuse_heads over the H axis (mean / max / min, weighted =
    sum_h w_h map_h, unnormalised)."""
    maps = np.asarray(maps, dtype=np.float64)
    if batched:
        return np.stack([aggregate_heads(x, how, weights) for x in maps])
    return fuse_heads(maps, how, weights)


def flow_read_out(flows, raw=False, prefix=0):
    """Attention-flow maps from the max flows flows[r, j] (input j to output
    row r): every row divided by its sum unless raw, then the first `prefix`
    columns dropped."""
    if not raw:
        flows = flows / flows.sum(-1, keepdims=True)
    return flows[:, prefix:]


# --------------------------------------------------------------------------
# Encoder-decoder.
# --------------------------------------------------------------------------


def bar(R):
    """Rbar = (R - I) / rowsum(R - I) + I, with 0 / 0 := 0 (Chefer's
    normalisation of a self-attention relevance before it crosses over)."""
    r = R - np.eye(R.shape[0])
    s = r.sum(-1, keepdims=True)
    out = np.divide(r, s, out=np.zeros_like(r), where=s != 0)
    return out + np.eye(R.shape[0])


def _value_weighted_stack(att, norms):
    """Every layer of att [L, H, rows, keys] value_weighted by norms [L, H, keys]."""
    if norms is None:
        return att
    return np.stack([value_weighted(att[l], np.asarray(norms[l], dtype=np.float64))
                     for l in range(att.shape[0])])


def causal_zeroed(A):
    """The tolerated mass above the diagonal dropped: the lower triangle of A."""
    return np.tril(A)


def encoder_decoder_rules(enc, dec, cross, genc, gdec, gcross, value_norms=(None, None, None),
                          causal=False):
    """Chefer et al. ICCV 2021, rules 6-10, on one sequence (float64
    [L, H, n, n] attentions and gradients, cross [Ld, H, nd, ne]), with
    Ab = mean_h(max(0, G A)):  R_ee = I, R_ee += Ab R_ee per encoder layer;
    R_dd = I, R_de = 0, per decoder layer l: R_dd += Ab R_dd, R_de += Ab R_de,
    then R_de += Rbar_dd^T Ab_x Rbar_ee (Ab_x of cross layer l; bar()).
    value_norms: (encoder, decoder, cross) [L, H, keys] or None, applied to
    the attention before the product with the gradient; causal: the decoder's
    Ab made lower-triangular.  Returns (R_de, R_ee, R_dd)."""
    enc, dec, cross = (_value_weighted_stack(a, v) for a, v in zip((enc, dec, cross), value_norms))

    def ab(a, g):
        return layer_relevance(a, g, "chefer")
    ne, nd = enc.shape[-1], dec.shape[-1]
    ree, rdd, rde = np.eye(ne), np.eye(nd), np.zeros((nd, ne))
    for l in range(enc.shape[0]):
        ree = ree + ab(enc[l], genc[l]) @ ree
    for l in range(dec.shape[0]):
        a = ab(dec[l], gdec[l])
        if causal:
            a = causal_zeroed(a)
        rdd = rdd + a @ rdd
        rde = rde + a @ rde
        rde = rde + bar(rdd).T @ ab(cross[l], gcross[l]) @ bar(ree)
    return rde, ree, rdd


def encoder_decoder_rollout(enc, dec, cross, residual=0.5, residual_weights=(None, None),
                            value_norms=(None, None, None), renorm=True):
    """Rollout composition on one sequence (float64): R_ee and R_dd ordinary
    rollouts (rollout_chain, mean fusion, residual or per-layer / per-token
    residual_weights (encoder, decoder) as [L] / [L, n]), and
    R_de = R_dd^T (Abar_x R_ee) with Abar_x = mean_h of the last cross layer.
    value_norms: (encoder, decoder, cross) [L, H, keys] or None.
    Returns (R_de, R_ee, R_dd)."""
    enc, dec, cross = (_value_weighted_stack(a, v) for a, v in zip((enc, dec, cross), value_norms))
    ree = rollout_chain(enc, residual=residual, residual_weights=residual_weights[0], renorm=renorm)[0][-1]
    rdd = rollout_chain(dec, residual=residual, residual_weights=residual_weights[1], renorm=renorm)[0][-1]
    return rdd.T @ (fuse_heads(cross[-1], "mean") @ ree), ree, rdd
