"""Per-sample normalisations: layer_norm, group_norm, instance_norm (one op, RowNorm, the backend's
row_norm_forward/backward on a (rows, cols) view of x) and local_response_norm (a composition).

The three reduce to one op because each normalises groups of contiguous values by their own mean and
biased variance: LayerNorm's rows are the leading axes and its columns the normalized shape, GroupNorm's
rows are (sample, group) pairs, InstanceNorm's (sample, channel) pairs. Their affine parts are broadcast
Mul and Add of Tensors (so the weight and bias gradients are those ops' reductions), as are all of
local_response_norm's steps, whose windowed channel sum is an average pool over a (N, 1, C, L) view.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.autograd import Function
from ..core.tensor import Tensor
from .avgpool2d import avg_pool2d
from .checks import as_tensor, check_float_input, check_same_dtype, optional_tensor, positive_int

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["group_norm", "instance_norm", "layer_norm", "local_response_norm"]


class RowNorm(Function):
    """Normalise x over its axes start_dim.. (each index of the leading axes is a row)."""

    @staticmethod
    def forward(ctx, x, start_dim: int, eps: float):
        rows = math.prod(x.shape[:start_dim])
        x2 = x.reshape(rows, math.prod(x.shape[start_dim:]))
        y, mean, rstd = ctx.backend.row_norm_forward(x2, eps)
        ctx.shape = x.shape
        ctx.save_for_backward(x2, mean, rstd)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, mean, rstd = ctx.saved_tensors
        dx = ctx.backend.row_norm_backward(dy.reshape(x2.shape), x2, mean, rstd)
        return dx.reshape(ctx.shape), None, None

    @staticmethod
    def symbolic(g, x, start_dim, eps):
        if g.opset >= 17 and start_dim >= 1:  # LayerNormalization came with opset 17
            scale = g.const(np.ones(x.shape[start_dim:], x.dtype), "norm_scale")
            return g.op("LayerNormalization", [x, scale], axis=start_dim, epsilon=float(eps))
        axes = tuple(range(start_dim, x.ndim))
        mean = g.reduce("ReduceMean", x, axes, True)
        centered = g.op("Sub", [x, mean])
        var = g.reduce("ReduceMean", g.op("Mul", [centered, centered]), axes, True)
        root = g.op("Sqrt", [g.op("Add", [var, g.scalar(eps, x.dtype, "eps")])])
        return g.op("Div", [centered, root])


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    """y * weight + bias, each viewed as ``shape`` to broadcast against y."""
    if weight is not None:
        y = y * (weight if weight.shape == shape else weight.reshape(shape))
    if bias is not None:
        y = y + (bias if bias.shape == shape else bias.reshape(shape))
    return y


def _parameters(x: Tensor, weight: Any, bias: Any, shape: tuple[int, ...], owner: str) -> tuple:
    """The optional weight and bias as Tensors of x's dtype, each of ``shape``."""
    w, b = optional_tensor(weight, owner), optional_tensor(bias, owner)
    for label, t in (("weight", w), ("bias", b)):
        check_same_dtype(x, t, owner)
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{owner}: expected a {label} of shape {shape}, got {tuple(t.shape)}")
    return w, b


def _channels_input(input: Any, owner: str, min_ndim: int) -> Tensor:
    x = as_tensor(input, owner)
    check_float_input(x, None, owner, layout="(N, C, ...)")
    if x.ndim < min_ndim:
        raise ValueError(f"{owner}: expected an input (N, C, ...) of at least {min_ndim} dimensions, got shape "
                         f"{x.shape}")
    return x


def layer_norm(input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing axes ``normalized_shape``; weight and bias have that shape."""
    x = as_tensor(input, "layer_norm")
    check_float_input(x, None, "layer_norm", layout="(N, ...)")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} must be the trailing axes of the input, got "
                         f"shape {x.shape}")
    w, b = _parameters(x, weight, bias, shape, "layer_norm")
    return _affine(RowNorm.apply(x, x.ndim - len(shape), float(eps)), w, b, shape)


def group_norm(input: Any, num_groups: int, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Tensor:
    """Normalise each sample's channels in ``num_groups`` groups; weight and bias: (C,)."""
    x = _channels_input(input, "group_norm", 2)
    c = x.shape[1]
    positive_int(num_groups, "num_groups", "group_norm")
    if c % num_groups:
        raise ValueError(f"group_norm: the input's {c} channels are not divisible by num_groups={num_groups}")
    w, b = _parameters(x, weight, bias, (c,), "group_norm")
    y = RowNorm.apply(x.reshape(x.shape[0], num_groups, -1), 2, float(eps)).reshape(x.shape)
    return _affine(y, w, b, (c,) + (1,) * (x.ndim - 2))


def instance_norm(input: Any, running_mean: Any = None, running_var: Any = None, weight: Any = None,
                  bias: Any = None, use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each sample's channels over their spatial axes; weight and bias: (C,), as PyTorch's.

    ``use_input_stats=True``: each instance's own statistics; running statistics (C,), when given, are
    updated in place with ``momentum`` from the batch average of the per-instance means and unbiased
    variances. ``use_input_stats=False``: normalised with ``running_mean`` and ``running_var`` instead
    (a composition of Tensor ops, differentiable in x, weight and bias)."""
    x = _channels_input(input, "instance_norm", 3)
    c = x.shape[1]
    stats = [s.data if isinstance(s, Tensor) else s for s in (running_mean, running_var)]
    if (stats[0] is None) != (stats[1] is None):
        raise ValueError("instance_norm: give both running_mean and running_var, or neither")
    if not use_input_stats and stats[0] is None:
        raise ValueError("instance_norm: use_input_stats=False needs running_mean and running_var")
    for label, s in zip(("running_mean", "running_var"), stats):
        if s is not None and tuple(s.shape) != (c,):
            raise ValueError(f"instance_norm: expected a {label} of shape {(c,)}, got {tuple(s.shape)}")
    w, b = _parameters(x, weight, bias, (c,), "instance_norm")
    shape = (c,) + (1,) * (x.ndim - 2)
    if not use_input_stats:
        mean = Tensor(x.backend.asarray(stats[0], dtype=x.dtype), backend=x.backend)
        var = Tensor(x.backend.asarray(stats[1], dtype=x.dtype), backend=x.backend)
        y = (x - mean.reshape(shape)) / (var.reshape(shape) + float(eps)) ** 0.5
        return _affine(y, w, b, shape)
    if stats[0] is not None:
        _update_running_stats(x, stats[0], stats[1], float(momentum))
    return _affine(RowNorm.apply(x, 2, float(eps)), w, b, shape)


def _update_running_stats(x: Tensor, running_mean: Any, running_var: Any, momentum: float) -> None:
    """PyTorch's update: the per-instance means and unbiased variances averaged over the batch, mixed in
    with ``momentum`` (in place, no graph)."""
    n, c = x.shape[:2]
    count = math.prod(x.shape[2:])
    if count < 2:
        raise ValueError(f"instance_norm: updating running statistics needs more than one value per instance, "
                         f"got input shape {x.shape}")
    x3 = x.data.reshape(n, c, count)
    mean = x3.mean(axis=2)
    centered = x3 - mean[:, :, None]
    var = (centered * centered).sum(axis=2) / (count - 1)
    running_mean *= 1 - momentum
    running_mean += (momentum * mean.mean(axis=0)).astype(running_mean.dtype, copy=False)
    running_var *= 1 - momentum
    running_var += (momentum * var.mean(axis=0)).astype(running_var.dtype, copy=False)


def local_response_norm(input: Any, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """x / (k + alpha / size * sum of x^2 over ``size`` neighbouring channels)^beta, the channel axis
    zero-padded by size // 2 in front and (size - 1) // 2 behind, as PyTorch's.

    A composition of existing differentiable ops, no kernel of its own: the window sum / size is an
    average pool counting padding, with a (size, 1) window over a (N, 1, C, L) view of x^2 (padding
    size // 2 on both sides; for an even size the extra last row is sliced off)."""
    x = _channels_input(input, "local_response_norm", 3)
    positive_int(size, "size", "local_response_norm")
    n, c = x.shape[:2]
    squares = (x * x).reshape(n, 1, c, -1)
    mean = avg_pool2d(squares, (size, 1), stride=1, padding=(size // 2, 0), count_include_pad=True)
    if mean.shape[2] != c:
        mean = mean[:, :, :c]
    divisor = (mean.reshape(x.shape) * float(alpha) + float(k)) ** float(beta)
    return x / divisor
