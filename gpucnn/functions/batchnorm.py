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

from typing import Any

import numpy as np

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import as_tensor, check_float_input, check_same_dtype, optional_tensor

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["batch_norm"]


def _channel_sums(xp, a3):
    """a3: (N, C, L) -> (C,), the sum over N and L."""
    return (a3 @ xp.ones(a3.shape[2], dtype=a3.dtype)).sum(axis=0)


def _in_order(parts):
    """The per-part results of Backend.over_batch summed in batch order (one part: itself)."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float):
        xp = ctx.xp
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, -1)
        count = x3.shape[0] * x3.shape[2]

        def over_batch(body):  # body(lo, hi) on the batch rows lo:hi, maybe two halves at once
            return ctx.backend.over_batch(body, n, x3.size)

        if training:
            mean = _in_order(over_batch(lambda lo, hi: _channel_sums(xp, x3[lo:hi]))) / x.dtype.type(count)
            centered = xp.empty(x3.shape, dtype=x.dtype)

            def center(lo, hi):
                rows = centered[lo:hi]
                xp.subtract(x3[lo:hi], mean[:, None], out=rows)
                return xp.einsum("ncl,ncl->c", rows, rows)

            # the two-pass variance (of the centred values): E[x^2] - E[x]^2 cancels in float32
            var = _in_order(over_batch(center)) / x.dtype.type(count)
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
            y = xp.empty(x3.shape, dtype=xp.result_type(x3, scale))

            def scale_and_shift(lo, hi):
                rows = y[lo:hi]
                xp.multiply(x3[lo:hi], scale[:, None], out=rows)
                rows += shift[:, None]

            over_batch(scale_and_shift)
            ctx.mean = mean.copy()  # the running mean changes in place at the next training step
            ctx.save_for_backward(x3, inv_std, weight)
            return y.reshape(x.shape)
        xhat = centered
        ctx.save_for_backward(xhat, inv_std, weight)
        y = xhat if weight is None else xp.empty(x3.shape, dtype=xp.result_type(xhat, weight))

        def normalise(lo, hi):
            rows = xhat[lo:hi]
            rows *= inv_std[:, None]
            if weight is not None:
                xp.multiply(rows, weight[:, None], out=y[lo:hi])
                y[lo:hi] += bias[:, None]

        over_batch(normalise)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy):
        xp = ctx.xp
        xhat, inv_std, weight = ctx.saved_tensors
        dy3 = dy.reshape(xhat.shape)
        n = dy3.shape[0]
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        if not ctx.training and weight is not None and need_dw:
            xhat = (xhat - ctx.mean[:, None]) * inv_std[:, None]  # eval mode kept x
        training = ctx.training and need_dx
        want_sum_dy = training or (weight is not None and need_db)
        want_sum_dy_xhat = training or (weight is not None and need_dw)

        def over_batch(body):  # body(lo, hi) on the batch rows lo:hi, maybe two halves at once
            return ctx.backend.over_batch(body, n, dy3.size)

        def sums(lo, hi):
            rows = dy3[lo:hi]
            return (_channel_sums(xp, rows) if want_sum_dy else None,
                    xp.einsum("ncl,ncl->c", rows, xhat[lo:hi]) if want_sum_dy_xhat else None)

        parts = over_batch(sums) if want_sum_dy or want_sum_dy_xhat else [(None, None)]
        sum_dy = _in_order([part[0] for part in parts]) if want_sum_dy else None
        sum_dy_xhat = _in_order([part[1] for part in parts]) if want_sum_dy_xhat else None
        dweight = sum_dy_xhat if weight is not None and need_dw else None
        dbias = sum_dy if weight is not None and need_db else None
        dx = None
        if need_dx:
            scale = inv_std if weight is None else weight * inv_std
            dx = xp.empty(dy3.shape, dtype=xp.result_type(dy3, scale))
            if ctx.training:
                # (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std with dxhat = dy * weight,
                # the per-channel means taken out of the weight
                count = xp.asarray(dy3.shape[0] * dy3.shape[2], dtype=dy.dtype)
                mean_dy, mean_dy_xhat = (sum_dy / count)[:, None], (sum_dy_xhat / count)[:, None]

                def input_grad(lo, hi):
                    rows = dx[lo:hi]
                    xp.multiply(xhat[lo:hi], mean_dy_xhat, out=rows)
                    rows += mean_dy
                    xp.subtract(dy3[lo:hi], rows, out=rows)
                    rows *= scale[:, None]
            else:
                def input_grad(lo, hi):
                    xp.multiply(dy3[lo:hi], scale[:, None], out=dx[lo:hi])

            over_batch(input_grad)
            dx = dx.reshape(dy.shape)
        return dx, dweight, dbias, None, None, None, None, None

    @staticmethod
    def symbolic(g, x, weight, bias, running_mean, running_var, training, momentum, eps):
        if training:
            raise g.error(f"cannot export BatchNorm in layer {g.where} normalising with batch statistics "
                          f"(track_running_stats=False or training=True); ONNX's BatchNormalization uses "
                          f"running statistics")
        c, dtype = x.shape[1], x.dtype
        scale = weight if weight is not None else g.const(np.ones(c, dtype), "bn_scale")
        shift = bias if bias is not None else g.const(np.zeros(c, dtype), "bn_bias")
        # the running statistics are arrays (buffers), not Tensor arguments: g.value names them
        return g.op("BatchNormalization", [x, scale, shift, g.value(running_mean), g.value(running_var)],
                    epsilon=float(eps))


def batch_norm(input: Any, running_mean: Any, running_var: Any, weight: Any = None, bias: Any = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise over every axis but 1. In training the batch statistics are used and the running
    ones (updated in place, when given) follow with ``momentum``; in eval the running ones are used."""
    x = as_tensor(input, "batch_norm")
    check_float_input(x, None, "batch_norm", layout="(N, C, ...)")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input (N, C, ...) of at least 2 dimensions, got shape {x.shape}")
    if training and x.numel() // x.shape[1] < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got input shape {x.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: eval mode needs running_mean and running_var")
    stats = [s.data if isinstance(s, Tensor) else s for s in (running_mean, running_var)]
    w, b = optional_tensor(weight, "batch_norm"), optional_tensor(bias, "batch_norm")
    check_same_dtype(x, w, "batch_norm")
    return BatchNorm.apply(x, w, b, *stats, bool(training), float(momentum), float(eps))
