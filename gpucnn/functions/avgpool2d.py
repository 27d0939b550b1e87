"""Average pooling: windows, global and adaptive. x: (N, C, H, W) -> y: (N, C, OH, OW)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import as_tensor, check_float_input
from .pooling import PoolSpec, check_pool_input, check_unsupported_pool_options, pool_spec

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["adaptive_avg_pool2d", "avg_pool2d"]


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, pool: PoolSpec, count_include_pad: bool):
        ctx.pool, ctx.x_shape, ctx.count_include_pad = pool, x.shape, count_include_pad
        return ctx.backend.avgpool2d_forward(x, *pool, count_include_pad)

    @staticmethod
    def backward(ctx, dy):
        return ctx.backend.avgpool2d_backward(dy, ctx.x_shape, *ctx.pool, ctx.count_include_pad), None, None

    @staticmethod
    def symbolic(g, x, pool, count_include_pad):
        if pool.padding == (0, 0) and tuple(pool.kernel) == tuple(x.shape[2:]):
            return g.op("GlobalAveragePool", [x])
        attrs = g.pool_attrs(x.shape, pool, pads_counted=count_include_pad)
        return g.op("AveragePool", [x], count_include_pad=int(count_include_pad), **attrs)


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

    @staticmethod
    def symbolic(g, x, out_hw):
        # the forward's two products, with the averaging matrices as constants
        rows = g.const(adaptive_matrix(x.shape[2], out_hw[0], x.dtype), "adaptive_rows")
        cols = g.const(adaptive_matrix(x.shape[3], out_hw[1], x.dtype).T, "adaptive_cols")
        return g.op("MatMul", [g.op("MatMul", [rows, x]), cols])


def adaptive_matrix(size: int, out: int, dtype: Any) -> np.ndarray:
    """(out, size): row i averages input positions floor(i*size/out) .. ceil((i+1)*size/out) - 1."""
    matrix = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        start, stop = (i * size) // out, -(-((i + 1) * size) // out)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


def run_avg_pool2d(x: Tensor, pool: PoolSpec, count_include_pad: bool = True, owner: str = "avg_pool2d") -> Tensor:
    """The layer entry point: a checked spec, errors naming ``owner``."""
    check_pool_input(x, pool, owner)
    return AvgPool2d.apply(x, pool, count_include_pad)


def run_adaptive_avg_pool2d(x: Tensor, output_size: Any, owner: str = "adaptive_avg_pool2d") -> Tensor:
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


# ---------------------------------------------------------------------------- PyTorch's arguments
def avg_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: Any = None) -> Tensor:
    check_unsupported_pool_options("avg_pool2d", divisor_override=divisor_override)
    return run_avg_pool2d(as_tensor(input, "avg_pool2d"), pool_spec(kernel_size, stride, padding, ceil_mode,
                                                                     "avg_pool2d"), bool(count_include_pad))


def adaptive_avg_pool2d(input: Any, output_size: Any) -> Tensor:
    return run_adaptive_avg_pool2d(as_tensor(input, "adaptive_avg_pool2d"), output_size)
