"""attnroll: explanations of transformer predictions from their attention.

A client of attnroll-server (attention rollout, gradient-weighted rollout,
attention flow, encoder-decoder relevance, comparison and audit of saliency
maps), with PyTorch capture helpers and pictures.

    import attnroll
    with attnroll.Client("127.0.0.1:50051") as client:
        result = client.explain(attentions, prefix_tokens=1, grid=(14, 14))
        result.map                           # numpy [14, 14]

Modules: client (Client, PassStream), capture (capture_attention; needs
torch), render (heatmap, overlay, tokens_html; needs Pillow, matplotlib),
fusion (client-side head fusion), balancing (load balancing and retries over
replicas), options (keyword options to messages),
results, tensors, errors (AttnrollError). The generated stubs are
attnroll.v1.*_pb2 and *_pb2_grpc.
"""

from attnroll.client import Client, PassStream
from attnroll.errors import AttnrollError
from attnroll.results import AnalysisOutput, AuditResult, Explanation, PairResult

__version__ = "0.1.0"

__all__ = ["Client", "PassStream", "AttnrollError", "AnalysisOutput", "AuditResult",
           "Explanation", "PairResult", "capture_attention", "__version__"]


def capture_attention(model, **kw):
    """attnroll.capture.capture_attention (imports torch on first use)."""
    from attnroll.capture import capture_attention as _capture
    return _capture(model, **kw)
