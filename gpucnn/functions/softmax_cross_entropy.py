"""Softmax, log-softmax, the fused softmax cross-entropy kernel, and the negative log-likelihood; and the
losses of gpucnn.functional over them (mse_loss, plain Tensor arithmetic, too)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import activation_input, as_tensor, check_float_input

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["cross_entropy", "log_softmax", "mse_loss", "nll_loss", "softmax"]


class SoftmaxCrossEntropy(Function):
    """Mean (or sum) over the batch of -log softmax(logits)[label], computed stably by the
    backend's fused op, which also returns d loss / d logits = (softmax - onehot) / N. With
    ``label_smoothing`` eps the target is (1 - eps) * onehot + eps / C (PyTorch's unweighted
    definition): row loss (1 - eps) * -log p[label] + eps * mean_c -log p[c]."""

    not_exportable = "cannot export a loss (SoftmaxCrossEntropy); export the network alone"

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

    @staticmethod
    def symbolic(g, x, dim):
        return g.op("LogSoftmax", [x], axis=dim)


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

    @staticmethod
    def symbolic(g, x, dim):
        return g.op("Softmax", [x], axis=dim)


class NllLoss(Function):
    """-w[t] * logp[i, t] per row, with PyTorch's ignore_index and weighted mean."""

    not_exportable = "cannot export a loss (NllLoss); export the network alone"

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


# ---------------------------------------------------------------------------- PyTorch's arguments
def softmax(input: Any, dim: int = -1) -> Tensor:
    return Softmax.apply(activation_input(input, "softmax"), dim)


def log_softmax(input: Any, dim: int = -1) -> Tensor:
    return LogSoftmax.apply(activation_input(input, "log_softmax"), dim)


def cross_entropy(input: Any, target: Any, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, labels_checked: bool = False) -> Tensor:
    """Softmax cross-entropy of logits (N, C) against class indices (N,). The unweighted case (no
    weight, no ignored label, mean or sum; with or without label smoothing) is one fused backend op.

    The labels' range is checked on the host, which on a GPU copies them back and waits for the
    device. ``labels_checked=True`` says the caller has already checked every label (gpucnn's
    ``train_epoch`` does, with the range a ``BatchIterator`` found once when it was built): only the
    shape and dtype are checked then, and a training step never waits."""
    logits = as_tensor(input, "cross_entropy")
    labels = check_labels(logits, target, "cross_entropy", ignore_index, checked=labels_checked)
    check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    fused = weight is None and reduction != "none"
    # checked labels lie in [0, C): none can be an ignore_index outside that range
    in_range = labels_checked and not 0 <= ignore_index < logits.shape[1]
    if fused and (in_range or not bool((logits.backend.to_numpy(labels) == ignore_index).any())):
        # the op Trainer(graph=True)'s captured step calls too, so eager and graphed steps agree bit for bit
        return SoftmaxCrossEntropy.apply(logits, logits.backend.asarray(labels, dtype=np.int32), reduction,
                                         float(label_smoothing))
    logp = log_softmax(logits, dim=1)
    loss = nll_loss(logp, labels, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return loss
    return (1 - label_smoothing) * loss + (label_smoothing / logits.shape[1]) * _smoothing_term(
        logp, labels, weight, ignore_index, reduction)


def _smoothing_term(logp: Tensor, labels: Any, weight: Any, ignore_index: int, reduction: str) -> Tensor:
    """PyTorch's label-smoothing term: -sum_c w_c logp[i, c] per row, reduced like the NLL."""
    xp = logp.backend.xp
    kept = (labels != ignore_index).astype(logp.dtype)
    w = None if weight is None else as_tensor(weight, "cross_entropy").data.astype(logp.dtype, copy=False)
    per_class = logp if w is None else logp * Tensor(w.reshape(1, -1), backend=logp.backend)
    rows = -per_class.sum(dim=1) * Tensor(kept, backend=logp.backend)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    safe = xp.where(labels != ignore_index, labels, 0)
    denominator = kept.sum() if w is None else (w[safe] * kept).sum()
    return rows.sum() / Tensor(xp.asarray(denominator, dtype=logp.dtype), backend=logp.backend)


def nll_loss(input: Any, target: Any, weight: Any = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """-weight[t] * input[i, t] from log-probabilities (N, C); 'mean' divides by the summed weights."""
    logp = as_tensor(input, "nll_loss")
    labels = check_labels(logp, target, "nll_loss", ignore_index)
    check_reduction(reduction, "nll_loss")
    w = None if weight is None else as_tensor(weight, "nll_loss").data
    if w is not None and tuple(w.shape) != (logp.shape[1],):
        raise ValueError(f"nll_loss: weight must have shape ({logp.shape[1]},), got {tuple(w.shape)}")
    return NllLoss.apply(logp, labels, w, int(ignore_index), reduction)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    x = as_tensor(input, "mse_loss")
    t = target if isinstance(target, Tensor) else Tensor(x.backend.asarray(target, dtype=x.dtype),
                                                           backend=x.backend)
    if x.shape != t.shape:
        raise ValueError(f"mse_loss: input shape {x.shape} and target shape {t.shape} differ")
    check_reduction(reduction, "mse_loss")
    diff = x - t
    squared = diff * diff
    return squared if reduction == "none" else squared.sum() if reduction == "sum" else squared.mean()


def check_labels(logits: Tensor, target: Any, owner: str, ignore_index: int = -100, checked: bool = False) -> Any:
    """Integer labels (N,) in [0, C) (or ignore_index), as a backend array; checked on the host.

    ``checked``: the caller vouches for the range; the shape and dtype alone are checked, from the
    array's metadata, so labels on a GPU are neither copied back nor waited for."""
    check_float_input(logits, 2, owner, layout="(N, C)")
    labels = target.data if isinstance(target, Tensor) else target
    if checked and hasattr(labels, "shape") and hasattr(labels, "dtype"):
        if tuple(labels.shape) != (logits.shape[0],) or np.dtype(labels.dtype).kind not in "iu":
            raise ValueError(f"{owner}: expected integer labels of shape ({logits.shape[0]},), "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        return labels if logits.backend.owns(labels) else logits.backend.asarray(labels)
    host = np.asarray(logits.backend.to_numpy(labels) if logits.backend.owns(labels) else labels)
    if host.shape != (logits.shape[0],) or host.dtype.kind not in "iu":
        raise ValueError(f"{owner}: expected integer labels of shape ({logits.shape[0]},), "
                         f"got {host.dtype} {host.shape}")
    real = host[host != ignore_index]
    if real.size and (real.min() < 0 or real.max() >= logits.shape[1]):
        raise ValueError(f"{owner}: labels must lie in [0, {logits.shape[1]}), got values from {real.min()} "
                         f"to {real.max()}")
    return labels if logits.backend.owns(labels) else logits.backend.asarray(host)


def check_reduction(reduction: str, owner: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{owner}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
