"""Average pooling: windows, global and adaptive. x: (N, C, H, W) -> y: (N, C, OH, OW)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import check_float_input
from .conv2d import PoolSpec
from .pooling import check_pool_input


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, pool: PoolSpec, count_include_pad: bool):
        ctx.pool, ctx.x_shape, ctx.count_include_pad = pool, x.shape, count_include_pad
        return ctx.backend.avgpool2d_forward(x, *pool, count_include_pad)

    @staticmethod
    def backward(ctx, dy):
        return ctx.backend.avgpool2d_backward(dy, ctx.x_shape, *ctx.pool, ctx.count_include_pad), None, None


class AdaptiveAvgPool2d(Function):
    """PyTorch's adaptive windows, rows [floor(i*H/OH), ceil((i+1)*H/OH)), as two averaging
    matrices: y = P_h @ x @ P_w^T. (An evenly dividing size runs as AvgPool2d instead.)"""

    @staticmethod
    def forward(ctx, x, out_hw: tuple[int, int]):
        xp = ctx.xp
        ctx.rows = xp.asarray(adaptive_matrix(x.shape[2], out_hw[0], x.dtype))
        ctx.cols = xp.asarray(adaptive_matrix(x.shape[3], out_hw[1], x.dtype))
        return ctx.rows @ x @ ctx.cols.T

    @staticmethod
    def backward(ctx, dy):
        return ctx.rows.T @ dy @ ctx.cols, None


def adaptive_matrix(size: int, out: int, dtype: Any) -> np.ndarray:
    """(out, size): row i averages input positions floor(i*size/out) .. ceil((i+1)*size/out) - 1."""
    matrix = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        start, stop = (i * size) // out, -(-((i + 1) * size) // out)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


def avg_pool2d(x: Tensor, pool: PoolSpec, count_include_pad: bool = True, owner: str = "avg_pool2d") -> Tensor:
    check_pool_input(x, pool, owner)
    return AvgPool2d.apply(x, pool, count_include_pad)


def adaptive_avg_pool2d(x: Tensor, output_size: Any, owner: str = "adaptive_avg_pool2d") -> Tensor:
    check_float_input(x, 4, owner)
    h, w = x.shape[2:]
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    oh, ow = h if oh is None else oh, w if ow is None else ow
    if min(oh, ow) < 1:
        raise ValueError(f"{owner}: output_size must be >= 1, got {output_size!r}")
    if h % oh == 0 and w % ow == 0:
        kernel = (h // oh, w // ow)
        return AvgPool2d.apply(x, PoolSpec(kernel, kernel, (0, 0), False), True)
    return AdaptiveAvgPool2d.apply(x, (oh, ow))
