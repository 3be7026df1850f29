"""Keyword options to `attnroll.v1` messages (analyses, layouts, comparisons).

Analysis options (each maps to one proto field; see docs/conventions.md):
    method: "rollout" (default), "flow" or "validate"
    fusion: "mean" (default), "max", "min", "weighted", "none" (rollout only)
    head_weights: one weight per head (weighted fusion / head_aggregate)
    head_aggregate: "mean", "max", "min", "weighted" (with fusion "none")
    residual: residual weight a in [0, 1] (default 0.5)
    no_renormalize: skip the row renormalisation
    layers: (first, last), inclusive
    per_layer: a map per layer of the range (rollout)
    rows: list of query rows, "last" or "mean" (default row 0)
    scaling: "none", "max", "minmax", "sum"
    sink_tokens: key columns zeroed and renormalised away
    discard_ratio, threshold, mass, top_k: pruning (rollout)
    prune_placement: "before" | "after" for every pruning step
    renormalize_before_residual: attnroll 0.1's pruning placement
    gradient_rule: "chefer" or "vit_explain" (with gradients); row_normalize
    fail_on_degenerate: a degenerate result fails the pass
    all_rows, raw: attention flow read-out
    name: a label echoed in the result
"""

from typing import Any, Dict, Optional, Sequence

from attnroll.errors import AttnrollError
from attnroll.v1 import analysis_pb2, audit_pb2, pass_pb2

from attnroll import tensors

ANALYSIS_KEYS = frozenset((
    "method", "fusion", "head_weights", "head_aggregate", "residual", "no_renormalize",
    "layers", "per_layer", "rows", "scaling", "sink_tokens", "discard_ratio", "threshold",
    "mass", "top_k", "prune_placement", "renormalize_before_residual", "gradient_rule",
    "row_normalize", "fail_on_degenerate", "all_rows", "raw", "name"))

LAYOUT_KEYS = frozenset(("prefix_tokens", "grid", "valid_lengths", "causal",
                         "row_sum_tolerance", "request_id"))

_FUSIONS = {"mean": analysis_pb2.HEAD_FUSION_MEAN, "max": analysis_pb2.HEAD_FUSION_MAX,
            "min": analysis_pb2.HEAD_FUSION_MIN, "weighted": analysis_pb2.HEAD_FUSION_WEIGHTED,
            "none": analysis_pb2.HEAD_FUSION_NONE}
_SCALINGS = {"none": analysis_pb2.SCALING_NONE, "max": analysis_pb2.SCALING_MAX,
             "minmax": analysis_pb2.SCALING_MINMAX, "sum": analysis_pb2.SCALING_SUM}
_RULES = {"chefer": analysis_pb2.GRADIENT_RULE_CHEFER,
          "vit_explain": analysis_pb2.GRADIENT_RULE_VIT_EXPLAIN}
_PLACEMENTS = {"before": analysis_pb2.PRUNING_PLACEMENT_BEFORE_RESIDUAL,
               "after": analysis_pb2.PRUNING_PLACEMENT_AFTER_RESIDUAL}
_COMPOSITIONS = {"rules": analysis_pb2.COMPOSITION_RULES,
                 "rollout": analysis_pb2.COMPOSITION_ROLLOUT}


def _choice(table: Dict[str, int], key: str, value: Any) -> int:
    if value not in table:
        raise ValueError("%s: expected one of %s, got %r" % (key, ", ".join(table), value))
    return table[value]


def _readout(ro: analysis_pb2.ReadOut, opts: Dict[str, Any]) -> None:
    rows = opts.get("rows")
    if rows == "last":
        ro.last_row = True
    elif rows == "mean":
        ro.mean_of_rows = True
    elif rows is not None:
        ro.rows.extend(int(r) for r in ([rows] if isinstance(rows, int) else rows))
    ro.scaling = _choice(_SCALINGS, "scaling", opts.get("scaling", "none"))
    ro.sink_tokens = int(opts.get("sink_tokens", 0))


def _common(msg, opts: Dict[str, Any]) -> None:
    msg.fusion = _choice(_FUSIONS, "fusion", opts.get("fusion", "mean"))
    if opts.get("head_weights") is not None:
        msg.head_weights.extend(float(w) for w in opts["head_weights"])
    if opts.get("residual") is not None:
        msg.residual = float(opts["residual"])
    msg.no_renormalize = bool(opts.get("no_renormalize", False))
    if opts.get("layers") is not None:
        first, last = opts["layers"]
        msg.layers.first, msg.layers.last = int(first), int(last)


def analysis(gradient: bool = False, **opts) -> analysis_pb2.Analysis:
    """One `Analysis` from keyword options (see the module's doc). gradient:
    the pass carries gradients (the rollout is then gradient-weighted, rule
    `gradient_rule`, default "chefer")."""
    unknown = set(opts) - ANALYSIS_KEYS
    if unknown:
        raise TypeError("unknown analysis option(s): %s" % ", ".join(sorted(unknown)))
    a = analysis_pb2.Analysis(name=opts.get("name", ""))
    method = opts.get("method", "rollout")
    if method == "rollout":
        r = a.rollout
        _common(r, opts)
        r.per_layer = bool(opts.get("per_layer", False))
        _readout(r.readout, opts)
        p = r.pruning
        p.discard_ratio = float(opts.get("discard_ratio", 0.0))
        p.threshold = float(opts.get("threshold", 0.0))
        p.mass = float(opts.get("mass", 0.0))
        p.top_k = int(opts.get("top_k", 0))
        if opts.get("prune_placement") is not None:
            place = _choice(_PLACEMENTS, "prune_placement", opts["prune_placement"])
            p.discard_ratio_placement = p.threshold_placement = place
            p.mass_placement = p.top_k_placement = place
        p.renormalize_before_residual = bool(opts.get("renormalize_before_residual", False))
        if gradient or opts.get("gradient_rule") is not None:
            r.gradient.rule = _choice(_RULES, "gradient_rule", opts.get("gradient_rule", "chefer"))
            r.gradient.row_normalize = bool(opts.get("row_normalize", False))
        if opts.get("head_aggregate") is not None:
            r.head_aggregate = _choice(_FUSIONS, "head_aggregate", opts["head_aggregate"])
        r.fail_on_degenerate = bool(opts.get("fail_on_degenerate", False))
    elif method == "flow":
        f = a.flow
        _common(f, opts)
        _readout(f.readout, opts)
        f.all_rows = bool(opts.get("all_rows", False))
        f.raw = bool(opts.get("raw", False))
    elif method == "validate":
        a.validate.SetInParent()
    else:
        raise ValueError("method: expected rollout, flow or validate, got %r" % (method,))
    return a


def encoder_decoder_analysis(**opts) -> analysis_pb2.Analysis:
    """An `EncoderDecoderOptions` analysis: composition ("rules" default,
    "rollout"), fusion, head_weights, residual, no_renormalize, rows,
    scaling, sink_tokens, return_encoder, return_decoder, name."""
    a = analysis_pb2.Analysis(name=opts.pop("name", ""))
    e = a.encoder_decoder
    e.composition = _choice(_COMPOSITIONS, "composition", opts.pop("composition", "rules"))
    e.fusion = _choice(_FUSIONS, "fusion", opts.pop("fusion", "mean"))
    if opts.get("head_weights") is not None:
        e.head_weights.extend(float(w) for w in opts.pop("head_weights"))
    opts.pop("head_weights", None)
    if opts.get("residual") is not None:
        e.residual = float(opts["residual"])
    opts.pop("residual", None)
    e.no_renormalize = bool(opts.pop("no_renormalize", False))
    e.return_encoder = bool(opts.pop("return_encoder", False))
    e.return_decoder = bool(opts.pop("return_decoder", False))
    _readout(e.readout, opts)
    for k in ("rows", "scaling", "sink_tokens"):
        opts.pop(k, None)
    if opts:
        raise TypeError("unknown encoder-decoder option(s): %s" % ", ".join(sorted(opts)))
    return a


def header(layout: pass_pb2.Layout, analyses: Sequence[analysis_pb2.Analysis],
           **opts) -> pass_pb2.PassHeader:
    """A PassHeader: layout completed from the layout options (prefix_tokens,
    grid=(h, w), valid_lengths, causal, row_sum_tolerance, request_id)."""
    unknown = set(opts) - LAYOUT_KEYS
    if unknown:
        raise TypeError("unknown pass option(s): %s" % ", ".join(sorted(unknown)))
    h = pass_pb2.PassHeader(request_id=str(opts.get("request_id", "")), layout=layout)
    h.layout.prefix_tokens = int(opts.get("prefix_tokens", 0))
    if opts.get("grid") is not None:
        gh, gw = opts["grid"]
        h.layout.grid.height, h.layout.grid.width = int(gh), int(gw)
    if opts.get("valid_lengths") is not None:
        h.layout.valid_lengths.extend(int(v) for v in opts["valid_lengths"])
    h.layout.causal = bool(opts.get("causal", False))
    h.row_sum_tolerance = float(opts.get("row_sum_tolerance", 0.0))
    h.analyses.extend(analyses)
    return h


def compare_options(grid=None, top_k: int = 0, top_mass: float = 0.0, region=None,
                    ssim_window: int = 0) -> audit_pb2.CompareOptions:
    """CompareOptions: grid=(h, w), top_k, top_mass, region (a mask of n
    values), ssim_window."""
    o = audit_pb2.CompareOptions(top_k=int(top_k), top_mass=float(top_mass),
                                 ssim_window=int(ssim_window))
    if grid is not None:
        o.grid_height, o.grid_width = int(grid[0]), int(grid[1])
    if region is not None:
        o.region.CopyFrom(tensors.encode(region, "fp32"))
    return o


def drift_thresholds(thresholds: Optional[Dict[str, float]]) -> audit_pb2.DriftThresholds:
    """DriftThresholds from a dict {min_spearman: 0.8, max_l1: 0.5, ...}."""
    t = audit_pb2.DriftThresholds()
    for k, v in (thresholds or {}).items():
        if k not in audit_pb2.DriftThresholds.DESCRIPTOR.fields_by_name:
            raise TypeError("unknown drift threshold %r" % (k,))
        setattr(t, k, float(v))
    return t


def split(opts: Dict[str, Any]):
    """(analysis options, layout options, the rest) of a keyword dict."""
    a = {k: v for k, v in opts.items() if k in ANALYSIS_KEYS}
    lay = {k: v for k, v in opts.items() if k in LAYOUT_KEYS}
    rest = {k: v for k, v in opts.items() if k not in ANALYSIS_KEYS and k not in LAYOUT_KEYS}
    return a, lay, rest


def bad(message: str) -> AttnrollError:
    return AttnrollError.invalid(message)
