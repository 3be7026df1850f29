"""Capturing a PyTorch model's attention (and its gradients) during the
forward pass, optionally streaming each layer to attnroll as it is computed.

torchvision's ViT (and every model built on ``torch.nn.MultiheadAttention``)
calls its attention with ``need_weights=False``: a forward hook sees no
weights. ``capture_attention`` wraps each attention module's forward to ask
for ``need_weights=True, average_attn_weights=False``, keeps the per-head
post-softmax weights [B, H, n, n] and hands the caller what it asked for
(nothing, or the head average), so the model computes what it computed
before.

Gradients: in torch 1.13 the returned weights are a view of the softmax
output that the attention product used, so ``retain_grad()`` on them leaves
``.grad`` None: the gradient arrives on the view's ``._base``. The capture
retains the gradient there and reshapes it to the weights' shape.

Hugging Face transformers: load the model with
``attn_implementation="eager"`` (the fused kernels return no weights) and
call it with ``output_attentions=True``; ``outputs.attentions`` is then one
post-softmax [B, H, n, n] tensor per layer, ready for
``Client.explain(outputs.attentions, ...)``. For gradients, call
``retain_grad()`` on each of them before the backward (they are not views
there) and pass ``[a.grad for a in outputs.attentions]`` as ``gradients``.
"""

from typing import Callable, List, Optional

import numpy as np
import torch

from attnroll.client import PassStream


def attention_modules(model: torch.nn.Module) -> List[torch.nn.MultiheadAttention]:
    """Every nn.MultiheadAttention of model, in registration order (the
    forward order of torchvision's ViT)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]


class AttentionCapture:
    """What capture_attention returns; a context manager.

    Attributes:
        weights: per layer, the post-softmax weights [B, H, n, n] as the
            forward produced them (part of the autograd graph when
            gradients are asked for).
        stream: the PassStream layers are sent to, if any.
    """

    def __init__(self, model: torch.nn.Module, modules=None, gradients: bool = False,
                 stream: Optional[PassStream] = None,
                 on_layer: Optional[Callable[[int, torch.Tensor], None]] = None):
        self.model = model
        self.modules = list(modules) if modules is not None else attention_modules(model)
        if not self.modules:
            raise ValueError("model has no torch.nn.MultiheadAttention module; pass modules=")
        self.want_gradients = gradients
        self.stream = stream
        self.on_layer = on_layer
        self.weights: List[torch.Tensor] = []
        self._holders: List[torch.Tensor] = []
        self._installed = False

    def __enter__(self) -> "AttentionCapture":
        for mha in self.modules:
            mha.forward = self._wrap(mha, mha.forward)
        self._installed = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.remove()
        if self.stream is not None and (exc_type is not None or not self.stream._closed):
            self.stream.cancel()  # an exception, or a result nobody asked for

    def remove(self) -> None:
        """Restores the modules' own forward."""
        if self._installed:
            for mha in self.modules:
                if "forward" in mha.__dict__:
                    del mha.forward
            self._installed = False

    def _wrap(self, mha, inner):
        def forward(*args, **kwargs):
            wanted = kwargs.get("need_weights", True)
            averaged = kwargs.get("average_attn_weights", True)
            kwargs["need_weights"] = True
            kwargs["average_attn_weights"] = False
            out, w = inner(*args, **kwargs)
            holder = w._base if w._base is not None else w
            if self.want_gradients and w.requires_grad:
                holder.retain_grad()
            layer = len(self.weights)
            self.weights.append(w)
            self._holders.append(holder)
            if self.stream is not None:
                self.stream.send(w.detach())
            if self.on_layer is not None:
                self.on_layer(layer, w)
            if not wanted:
                return out, None
            return out, (w.mean(dim=-3) if averaged else w)
        return forward

    def attentions(self) -> np.ndarray:
        """The captured weights as float32 [L, B, H, n, n]."""
        return np.stack([w.detach().float().cpu().numpy() for w in self.weights])

    def gradients(self) -> np.ndarray:
        """d(target)/d(weights) as float32 [L, B, H, n, n], after
        ``target.backward()``; read from where autograd put it (the view's
        _base in torch 1.13)."""
        out = []
        for l, (w, holder) in enumerate(zip(self.weights, self._holders)):
            if holder.grad is None:
                raise RuntimeError(
                    "layer %d: no gradient reached the attention weights (capture with "
                    "gradients=True, run the forward with autograd enabled and call "
                    "backward() on the target logit first)" % l)
            out.append(holder.grad.reshape(w.shape).float().cpu().numpy())
        return np.stack(out)

    def result(self):
        """The streamed pass's Explanation (finishes the stream)."""
        if self.stream is None:
            raise RuntimeError("nothing was streamed: capture_attention(..., stream=...)")
        return self.stream.finish()


def capture_attention(model: torch.nn.Module, *, modules=None, gradients: bool = False,
                      stream: Optional[PassStream] = None,
                      on_layer: Optional[Callable[[int, torch.Tensor], None]] = None
                      ) -> AttentionCapture:
    """Captures the per-head attention of model's nn.MultiheadAttention
    modules (or of ``modules``) during its forward passes.

    With ``stream`` (a Client.stream_pass), each layer is sent as soon as
    its attention exists, so the map is computed while the forward runs and
    is ready (``capture.result()``) when it ends. With ``gradients=True``
    the weights' gradients are retained (``capture.gradients()`` after the
    backward of the target logit). on_layer(layer, weights) is called for
    each layer.

    Example::

        with capture_attention(model, stream=client.stream_pass(
                12, prefix_tokens=1, grid=(14, 14))) as cap:
            logits = model(image)
        saliency = cap.result().map        # [14, 14]
    """
    return AttentionCapture(model, modules, gradients, stream, on_layer)
