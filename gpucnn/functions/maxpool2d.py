"""Max pooling, and ReLU -> MaxPool2d with one backward step. x: (N, C, H, W) -> y: (N, C, OH, OW)."""

from __future__ import annotations

from typing import Any

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import as_tensor, check_float_input
from .pooling import PoolSpec, check_pool_input, check_unsupported_pool_options, pool_spec

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["max_pool2d", "relu_max_pool2d"]


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

    @staticmethod
    def symbolic(g, x, pool):
        return g.max_pool(x, x.shape, pool)


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

    @staticmethod
    def symbolic(g, x, pool):
        return g.max_pool(g.op("Relu", [x]), x.shape, pool)


def run_max_pool2d(x: Tensor, pool: PoolSpec, owner: str = "max_pool2d") -> Tensor:
    """The layer entry point: a checked spec, errors naming ``owner``."""
    check_pool_input(x, pool, owner)
    return MaxPool2d.apply(x, pool)


def run_relu_max_pool2d(x: Tensor, pool: PoolSpec, owner: str = "relu_max_pool2d") -> Tensor:
    check_float_input(x, 4, owner)
    check_pool_input(x, pool, owner)
    return ReluMaxPool2d.apply(x, pool)


# ---------------------------------------------------------------------------- PyTorch's arguments
def max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    check_unsupported_pool_options("max_pool2d", dilation=dilation, return_indices=return_indices)
    return run_max_pool2d(as_tensor(input, "max_pool2d"),
                          pool_spec(kernel_size, stride, padding, ceil_mode, "max_pool2d"))


def relu_max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                    ceil_mode: bool = False) -> Tensor:
    """max_pool2d(relu(x)) with one backward step (the ReLU mask on the pooled gradient)."""
    return run_relu_max_pool2d(as_tensor(input, "relu_max_pool2d"),
                               pool_spec(kernel_size, stride, padding, ceil_mode, "relu_max_pool2d"))
