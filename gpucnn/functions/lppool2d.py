"""Power-average pooling, y = (sum over the window of x^p)^(1/p), as PyTorch's LPPool2d (no padding;
a ceil-mode partial window is scaled to a full one; p = inf is the window max of |x|)."""

from __future__ import annotations

from ..core.autograd import Function
from ..core.tensor import Tensor
from .conv2d import PoolSpec
from .pooling import check_pool_input


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


def lp_pool2d(x: Tensor, norm_type: float, pool: PoolSpec, owner: str = "lp_pool2d") -> Tensor:
    if not float(norm_type) > 0:
        raise ValueError(f"{owner}: norm_type must be > 0 (or inf), got {norm_type!r}")
    check_pool_input(x, pool, owner)
    return LPPool2d.apply(x, float(norm_type), pool)
