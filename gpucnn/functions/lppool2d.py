"""Power-average pooling, y = (sum over the window of x^p)^(1/p), as PyTorch's LPPool2d (no padding;
a ceil-mode partial window is scaled to a full one; p = inf is the window max of |x|)."""

from __future__ import annotations

import math
from typing import Any

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import as_tensor
from .pooling import PoolSpec, check_pool_input, pool_spec

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["lp_pool2d"]


class LPPool2d(Function):
    @staticmethod
    def forward(ctx, x, norm_type: float, pool: PoolSpec):
        y = ctx.backend.lppool2d_forward(x, norm_type, pool.kernel, pool.stride, pool.ceil_mode)
        ctx.norm_type, ctx.pool = norm_type, pool
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y = ctx.saved_tensors
        pool = ctx.pool
        return ctx.backend.lppool2d_backward(dy, x, y, ctx.norm_type, pool.kernel, pool.stride, pool.ceil_mode), \
            None, None

    @staticmethod
    def symbolic(g, x, norm_type, pool):
        if math.isinf(norm_type):
            return g.max_pool(g.op("Abs", [x]), x.shape, pool)
        # ONNX's LpPool takes an integer p and |x|; gpucnn's (PyTorch's) is (sum x^p * area/count)^(1/p)
        powered = g.op("Pow", [x, g.scalar(norm_type, x.dtype, "p")])
        attrs = g.pool_attrs(x.shape, pool, pads_counted=True)
        mean = g.op("AveragePool", [powered], count_include_pad=1, **attrs)
        total = g.op("Mul", [mean, g.scalar(pool.kernel[0] * pool.kernel[1], x.dtype, "area")])
        return g.op("Pow", [total, g.scalar(1.0 / norm_type, x.dtype, "inv_p")])


def run_lp_pool2d(x: Tensor, norm_type: float, pool: PoolSpec, owner: str = "lp_pool2d") -> Tensor:
    """The layer entry point: a checked spec, errors naming ``owner``."""
    if not float(norm_type) > 0:
        raise ValueError(f"{owner}: norm_type must be > 0 (or inf), got {norm_type!r}")
    check_pool_input(x, pool, owner)
    return LPPool2d.apply(x, float(norm_type), pool)


def lp_pool2d(input: Any, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False) -> Tensor:
    """(sum over each window of x^p)^(1/p), PyTorch's ``lp_pool2d`` (no padding; norm_type=inf: max |x|)."""
    return run_lp_pool2d(as_tensor(input, "lp_pool2d"), norm_type,
                         pool_spec(kernel_size, stride, 0, ceil_mode, "lp_pool2d"))
