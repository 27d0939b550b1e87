"""Softmax, log-softmax, the fused softmax cross-entropy kernel, and the negative log-likelihood."""

from __future__ import annotations

from ..core.autograd import Function


class SoftmaxCrossEntropy(Function):
    """Mean (or sum) over the batch of -log softmax(logits)[label], computed stably by the
    backend's fused op, which also returns d loss / d logits = (softmax - onehot) / N. With
    ``label_smoothing`` eps the target is (1 - eps) * onehot + eps / C (PyTorch's unweighted
    definition): row loss (1 - eps) * -log p[label] + eps * mean_c -log p[c]."""

    @staticmethod
    def forward(ctx, logits, labels, reduction: str, label_smoothing: float = 0.0):
        loss, ctx.dlogits = ctx.backend.softmax_cross_entropy(logits, labels, label_smoothing)
        if reduction == "sum":
            n = logits.dtype.type(logits.shape[0])
            loss, ctx.dlogits = loss * n, ctx.dlogits * n
        return loss

    @staticmethod
    def backward(ctx, dy):
        return ctx.dlogits * dy, None, None, None


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, dim: int):
        xp = ctx.xp
        shifted = x - x.max(axis=dim, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy - ctx.xp.exp(y) * dy.sum(axis=ctx.dim, keepdims=True), None


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim: int):
        xp = ctx.xp
        e = xp.exp(x - x.max(axis=dim, keepdims=True))
        y = e / e.sum(axis=dim, keepdims=True)
        ctx.dim = dim
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return y * (dy - (dy * y).sum(axis=ctx.dim, keepdims=True)), None


class NllLoss(Function):
    """-w[t] * logp[i, t] per row, with PyTorch's ignore_index and weighted mean."""

    @staticmethod
    def forward(ctx, logp, target, weight, ignore_index: int, reduction: str):
        xp = ctx.xp
        n = logp.shape[0]
        kept = target != ignore_index
        safe = xp.where(kept, target, 0)
        rows = xp.arange(n)
        row_weight = (weight[safe] if weight is not None else xp.ones(n, dtype=logp.dtype)) * kept
        row_weight = row_weight.astype(logp.dtype, copy=False)
        losses = -logp[rows, safe] * row_weight
        scale = 1
        if reduction == "mean":
            scale = 1 / row_weight.sum()
        ctx.saved = (rows, safe, row_weight, scale, logp.shape, logp.dtype, reduction)
        if reduction == "none":
            return losses
        return (losses.sum() * scale).astype(logp.dtype)

    @staticmethod
    def backward(ctx, dy):
        rows, safe, row_weight, scale, shape, dtype, reduction = ctx.saved
        dlogp = ctx.xp.zeros(shape, dtype)
        per_row = dy if reduction == "none" else dy * scale
        dlogp[rows, safe] = -(row_weight * per_row).astype(dtype, copy=False)
        return dlogp, None, None, None, None
