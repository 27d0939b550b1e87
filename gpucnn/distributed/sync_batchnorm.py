"""Batch normalisation with the statistics of the global batch (every rank's part of it).

Forward reduces per-channel sums for the mean, then per-channel squared deviations about that
mean for the variance: two reductions rather than one of (sum, sum of squares), because
E[x^2] - E[x]^2 cancels badly in float32. Backward reduces sum(dxhat) and sum(dxhat * xhat), the two
means the input gradient needs; the weight and bias gradients stay local (DataParallel averages
them with the others). With the DataParallel convention (each rank's loss is its own batch's mean,
gradients averaged) this is the gradient of BatchNorm over the global batch, as in PyTorch.
"""

from __future__ import annotations

from typing import Any

from ..core.autograd import Function
from ..core.tensor import Tensor
from ..functional import as_tensor
from ..functions.checks import check_float_input, check_same_dtype
from .world import all_reduce


class SyncBatchNormFunction(Function):
    # export traces in eval mode, where SyncBatchNorm runs as BatchNorm: only a forward calling
    # sync_batch_norm itself meets this
    not_exportable = ("cannot export SyncBatchNorm normalising with the global batch's statistics (training "
                      "mode); export in eval mode, where it runs as BatchNorm")

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        count = all_reduce(x.size // x.shape[1])  # a host int over MPI: no device round trip on a GPU
        mean = all_reduce(x.sum(axis=axes)) / count
        centered = x - mean.reshape(shape)
        var = all_reduce((centered * centered).sum(axis=axes)) / count
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += (momentum * count / (count - 1)) * var
        inv_std = (1 / ctx.xp.sqrt(var + x.dtype.type(eps))).astype(x.dtype, copy=False)
        xhat = centered * inv_std.reshape(shape)
        ctx.axes, ctx.shape, ctx.count = axes, shape, count
        ctx.save_for_backward(xhat, inv_std, weight)
        if weight is None:
            return xhat
        return xhat * weight.reshape(shape) + bias.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        xhat, inv_std, weight = ctx.saved_tensors
        axes, shape, xp = ctx.axes, ctx.shape, ctx.xp
        dweight = dbias = dx = None
        if weight is not None:
            dweight = (dy * xhat).sum(axis=axes) if ctx.needs_input_grad[1] else None
            dbias = dy.sum(axis=axes) if ctx.needs_input_grad[2] else None
            dxhat = dy * weight.reshape(shape)
        else:
            dxhat = dy
        if ctx.needs_input_grad[0]:
            channels = xhat.shape[1]
            both = xp.concatenate([dxhat.sum(axis=axes), (dxhat * xhat).sum(axis=axes)])
            means = all_reduce(both) / ctx.count
            mean_dxhat, mean_dxhat_xhat = means[:channels].reshape(shape), means[channels:].reshape(shape)
            dx = (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * inv_std.reshape(shape)
        return dx, dweight, dbias, None, None, None, None


def sync_batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None, bias: Any = None,
                    momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Training-mode batch_norm over the batch of all ranks together (every rank must call it)."""
    x = as_tensor(input, "sync_batch_norm")
    check_float_input(x, None, "sync_batch_norm", layout="(N, C, ...)")
    w, b = (None if t is None else as_tensor(t, "sync_batch_norm") for t in (weight, bias))
    check_same_dtype(x, w, "sync_batch_norm")
    stats = [s.data if isinstance(s, Tensor) else s for s in (running_mean, running_var)]
    return SyncBatchNormFunction.apply(x, w, b, *stats, float(momentum), float(eps))
