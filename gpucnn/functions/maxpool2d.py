"""Max pooling, and ReLU -> MaxPool2d with one backward step. x: (N, C, H, W) -> y: (N, C, OH, OW)."""

from __future__ import annotations

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import check_float_input
from .conv2d import PoolSpec
from .pooling import check_pool_input


class MaxPool2d(Function):
    """Each window's gradient goes to its argmax (the first NaN, where there is one)."""

    @staticmethod
    def forward(ctx, x, pool: PoolSpec):
        y, argmax = ctx.backend.maxpool2d_forward(x, *pool)
        ctx.pool, ctx.x_shape = pool, x.shape
        ctx.save_for_backward(argmax)
        return y

    @staticmethod
    def backward(ctx, dy):
        (argmax,) = ctx.saved_tensors
        return ctx.backend.maxpool2d_backward(dy, argmax, ctx.x_shape, *ctx.pool[:3]), None


class ReluMaxPool2d(Function):
    """maxpool2d(relu(x)). Each window routes its gradient to its argmax, where the ReLU's output
    is the pooled output, so the ReLU mask is applied to the pooled gradient (a quarter of the size
    for 2x2 windows) inside the pooling's backward: exactly the two backwards in one op, and the
    ReLU's output is not kept."""

    @staticmethod
    def forward(ctx, x, pool: PoolSpec):
        y, argmax = ctx.backend.maxpool2d_forward(ctx.backend.relu_forward(x), *pool)
        ctx.pool, ctx.x_shape = pool, x.shape
        ctx.save_for_backward(y, argmax)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, argmax = ctx.saved_tensors
        return ctx.backend.maxpool2d_backward(dy, argmax, ctx.x_shape, *ctx.pool[:3], relu_output=y), None


def max_pool2d(x: Tensor, pool: PoolSpec, owner: str = "max_pool2d") -> Tensor:
    check_pool_input(x, pool, owner)
    return MaxPool2d.apply(x, pool)


def relu_max_pool2d(x: Tensor, pool: PoolSpec, owner: str = "relu_max_pool2d") -> Tensor:
    check_float_input(x, 4, owner)
    check_pool_input(x, pool, owner)
    return ReluMaxPool2d.apply(x, pool)
