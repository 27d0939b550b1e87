"""Batch normalisation over every axis but the channels (1), as PyTorch defines it: training
uses the batch's biased variance and updates the running statistics with the unbiased one.
Written on the array namespace: x (N, C), (N, C, L) or (N, C, H, W)."""

from __future__ import annotations

from ..autograd import Function


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float):
        xp = ctx.xp
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        if training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            if running_mean is not None:
                count = x.size // x.shape[1]
                running_mean *= 1 - momentum
                running_mean += momentum * mean
                running_var *= 1 - momentum
                running_var += (momentum * count / (count - 1)) * var
        else:
            mean, var = running_mean, running_var
        inv_std = (1 / xp.sqrt(var + x.dtype.type(eps))).astype(x.dtype, copy=False)
        xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        ctx.axes, ctx.shape, ctx.training = axes, shape, training
        ctx.save_for_backward(xhat, inv_std, weight)
        if weight is None:
            return xhat
        return xhat * weight.reshape(shape) + bias.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        xhat, inv_std, weight = ctx.saved_tensors
        axes, shape = ctx.axes, ctx.shape
        dweight = dbias = None
        if weight is not None:
            dweight = (dy * xhat).sum(axis=axes) if ctx.needs_input_grad[1] else None
            dbias = dy.sum(axis=axes) if ctx.needs_input_grad[2] else None
            dxhat = dy * weight.reshape(shape)
        else:
            dxhat = dy
        dx = None
        if ctx.needs_input_grad[0]:
            if ctx.training:
                mean_dxhat = dxhat.mean(axis=axes, keepdims=True)
                mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True)
                dx = (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * inv_std.reshape(shape)
            else:
                dx = dxhat * inv_std.reshape(shape)
        return dx, dweight, dbias, None, None, None, None, None
