"""Batch normalisation over every axis but the channels (1), as PyTorch defines it: training
uses the batch's biased variance and updates the running statistics with the unbiased one.
Written on the array namespace: x (N, C), (N, C, L) or (N, C, H, W).

Every pass over the activations is a pass over memory on one core (NumPy), so the work is
arranged in as few whole-array passes as the formulas allow: x is viewed as (N, C, L), per-channel
sums are products with a ones vector (BLAS: contiguous, both cores) summed over N, sum(a * b) is
an einsum that writes no temporary, and the per-channel factors of the backward pass are folded
into two scalars per channel before dx is formed. ResNet-8 training at batch 128 on the 2-core
machine: BatchNorm's share of a step fell from about 60 to 25 ms (benchmarks/results/cpu-2026-11-23.md).
The rounding differs from a direct mean/var (blocked float32 sums instead of NumPy's pairwise
ones): tests/test_cpu_paths.py bounds it against float64.
"""

from __future__ import annotations

from ..autograd import Function


def _channel_sums(xp, a3):
    """a3: (N, C, L) -> (C,), the sum over N and L."""
    return (a3 @ xp.ones(a3.shape[2], dtype=a3.dtype)).sum(axis=0)


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float):
        xp = ctx.xp
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, -1)
        count = x3.shape[0] * x3.shape[2]
        if training:
            mean = _channel_sums(xp, x3) / x.dtype.type(count)
            centered = x3 - mean[:, None]
            # the two-pass variance (of the centred values): E[x^2] - E[x]^2 cancels in float32
            var = xp.einsum("ncl,ncl->c", centered, centered) / x.dtype.type(count)
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mean
                running_var *= 1 - momentum
                running_var += (momentum * count / (count - 1)) * var
        else:
            mean, var = running_mean, running_var
        inv_std = (1 / xp.sqrt(var + x.dtype.type(eps))).astype(x.dtype, copy=False)
        ctx.training = training
        if not training:
            # running statistics: one multiply-add per element, with or without a graph (the same
            # output either way); x is kept instead of xhat, which only the weight's gradient needs
            scale = inv_std if weight is None else inv_std * weight
            shift = -mean * scale if bias is None else bias - mean * scale
            y = x3 * scale[:, None]
            y += shift[:, None]
            ctx.mean = mean.copy()  # the running mean changes in place at the next training step
            ctx.save_for_backward(x3, inv_std, weight)
            return y.reshape(x.shape)
        xhat = centered
        xhat *= inv_std[:, None]
        ctx.save_for_backward(xhat, inv_std, weight)
        if weight is None:
            return xhat.reshape(x.shape)
        y = xhat * weight[:, None]
        y += bias[:, None]
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy):
        xp = ctx.xp
        xhat, inv_std, weight = ctx.saved_tensors
        dy3 = dy.reshape(xhat.shape)
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        if not ctx.training and weight is not None and need_dw:
            xhat = (xhat - ctx.mean[:, None]) * inv_std[:, None]  # eval mode kept x
        training = ctx.training and need_dx
        sum_dy = _channel_sums(xp, dy3) if training or (weight is not None and need_db) else None
        sum_dy_xhat = xp.einsum("ncl,ncl->c", dy3, xhat) if training or (weight is not None and need_dw) else None
        dweight = sum_dy_xhat if weight is not None and need_dw else None
        dbias = sum_dy if weight is not None and need_db else None
        dx = None
        if need_dx:
            scale = inv_std if weight is None else weight * inv_std
            if ctx.training:
                # (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std with dxhat = dy * weight,
                # the per-channel means taken out of the weight
                count = xp.asarray(dy3.shape[0] * dy3.shape[2], dtype=dy.dtype)
                dx = xhat * (sum_dy_xhat / count)[:, None]
                dx += (sum_dy / count)[:, None]
                xp.subtract(dy3, dx, out=dx)
                dx *= scale[:, None]
            else:
                dx = dy3 * scale[:, None]
            dx = dx.reshape(dy.shape)
        return dx, dweight, dbias, None, None, None, None, None
