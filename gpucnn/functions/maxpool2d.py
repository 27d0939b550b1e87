"""Max pooling (with PyTorch's return_indices), adaptive max pooling, and ReLU -> MaxPool2d with one
backward step. x: (N, C, H, W) -> y: (N, C, OH, OW)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.autograd import Function
from ..core.tensor import Tensor
from ..shapes import pair
from .checks import as_tensor, check_float_input, positive_pair
from .pooling import PoolSpec, check_pool_input, check_unsupported_pool_options, pool_spec

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["adaptive_max_pool2d", "max_pool2d", "max_unpool2d", "relu_max_pool2d"]


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


class MaxPool2dWithIndices(Function):
    """MaxPool2d that also returns its argmax as PyTorch's ``return_indices``: int64, each an index into
    its (n, c) H*W input plane. The same op as MaxPool2d; the indices take no gradient."""

    not_exportable = ("cannot export max pooling with return_indices=True: gpucnn.onnx exports Functions "
                      "with one output")

    @staticmethod
    def forward(ctx, x, pool: PoolSpec):
        y, argmax = ctx.backend.maxpool2d_forward(x, *pool)
        ctx.pool, ctx.x_shape = pool, x.shape
        ctx.save_for_backward(argmax)
        return y, argmax.astype(np.int64)

    @staticmethod
    def backward(ctx, dy, indices_grad):
        (argmax,) = ctx.saved_tensors
        return ctx.backend.maxpool2d_backward(dy, argmax, ctx.x_shape, *ctx.pool[:3]), None


class AdaptiveMaxPool2d(Function):
    """Max over PyTorch's adaptive windows, rows [floor(i*H/OH), ceil((i+1)*H/OH)), which overlap where
    the size does not divide evenly (an evenly dividing size runs as MaxPool2d instead). The first
    maximum wins ties and the first NaN everything, as in MaxPool2d."""

    not_exportable = ("cannot export adaptive max pooling to an output size that does not divide the input "
                      "size: ONNX's MaxPool has windows of one size, these vary")

    @staticmethod
    def forward(ctx, x, out_hw: tuple[int, int], return_indices: bool):
        y, argmax = ctx.backend.adaptive_maxpool2d_forward(x, out_hw)
        ctx.x_shape = x.shape
        ctx.save_for_backward(argmax)
        return (y, argmax.astype(np.int64)) if return_indices else y

    @staticmethod
    def backward(ctx, dy, *indices_grad):
        (argmax,) = ctx.saved_tensors
        return ctx.backend.adaptive_maxpool2d_backward(dy, argmax, ctx.x_shape), None, None


class MaxUnpool2d(Function):
    """The inverse of max pooling with indices: zeros, with each input at its index into its output
    plane. A repeated index (overlapping windows) keeps the last input in input order, on every
    backend (PyTorch leaves that order undefined on a GPU); the gradient is the gather dy[indices]."""

    not_exportable = ("cannot export max unpooling: ONNX's MaxUnpool indexes the whole N*C*H*W tensor where "
                      "PyTorch's indices (and gpucnn's) index each H*W plane, and return_indices does not export")

    @staticmethod
    def forward(ctx, x, indices, out_hw: tuple[int, int]):
        ctx.save_for_backward(indices)
        return ctx.backend.maxunpool2d_forward(x, indices, out_hw)

    @staticmethod
    def backward(ctx, dy):
        (indices,) = ctx.saved_tensors
        return ctx.backend.maxunpool2d_backward(dy, indices), None, None


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


def run_max_pool2d_with_indices(x: Tensor, pool: PoolSpec, owner: str = "max_pool2d") -> tuple[Tensor, Tensor]:
    """(y, indices): max pooling and PyTorch's int64 return_indices, without gradient."""
    check_pool_input(x, pool, owner)
    return _indices_without_grad(MaxPool2dWithIndices.apply(x, pool))


def _indices_without_grad(result: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    y, indices = result
    indices.requires_grad, indices._node = False, None  # integer positions: no gradient flows through them
    return y, indices


def adaptive_output_hw(x: Tensor, output_size: Any, owner: str) -> tuple[int, int]:
    """PyTorch's output_size: an int or a pair, None keeping that axis's input size."""
    h, w = x.shape[2:]
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"{owner}: output_size must be an int or a pair, got {output_size!r}")
        oh, ow = output_size
    else:
        oh = ow = output_size
    oh, ow = h if oh is None else oh, w if ow is None else ow
    for size in (oh, ow):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{owner}: output_size must be >= 1 (or None), got {output_size!r}")
    return int(oh), int(ow)


def run_adaptive_max_pool2d(x: Tensor, output_size: Any, return_indices: bool = False,
                            owner: str = "adaptive_max_pool2d") -> Any:
    check_float_input(x, 4, owner)
    h, w = x.shape[2:]
    oh, ow = adaptive_output_hw(x, output_size, owner)
    if h % oh == 0 and w % ow == 0:  # PyTorch's adaptive windows are then a plain max pool's
        kernel = (h // oh, w // ow)
        pool = PoolSpec(kernel, kernel, (0, 0), False)
        return _indices_without_grad(MaxPool2dWithIndices.apply(x, pool)) if return_indices \
            else MaxPool2d.apply(x, pool)
    if return_indices:
        return _indices_without_grad(AdaptiveMaxPool2d.apply(x, (oh, ow), True))
    return AdaptiveMaxPool2d.apply(x, (oh, ow), False)


def run_relu_max_pool2d(x: Tensor, pool: PoolSpec, owner: str = "relu_max_pool2d") -> Tensor:
    check_float_input(x, 4, owner)
    check_pool_input(x, pool, owner)
    return ReluMaxPool2d.apply(x, pool)


UnpoolSpec = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def unpool_spec(kernel_size: Any, stride: Any, padding: Any, owner: str) -> UnpoolSpec:
    """(kernel, stride, padding) checked; ``stride=None`` means the kernel size, as in PyTorch."""
    kernel = positive_pair(kernel_size, "kernel_size", owner)
    stride = kernel if stride is None else positive_pair(stride, "stride", owner)
    padding = pair(padding, "padding", owner)
    if min(padding) < 0:
        raise ValueError(f"{owner}: padding must be >= 0, got {padding}")
    return kernel, stride, padding


def run_max_unpool2d(x: Tensor, indices: Any, spec: UnpoolSpec, output_size: Any = None,
                     owner: str = "max_unpool2d") -> Tensor:
    check_float_input(x, 4, owner)
    if not isinstance(indices, Tensor):
        if not (hasattr(indices, "shape") and hasattr(indices, "dtype")):
            raise TypeError(f"{owner}: indices must be a gpucnn Tensor or an array, got "
                            f"{type(indices).__module__}.{type(indices).__name__}")
        indices = Tensor(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{owner}: indices must be integers (max_pool2d's return_indices), got dtype {indices.dtype}")
    if tuple(indices.shape) != tuple(x.shape):
        raise ValueError(f"{owner}: indices must have the input's shape {x.shape}, got {indices.shape}")
    if indices.dtype != np.int64:
        indices = Tensor._wrap(indices.data.astype(np.int64), False, indices.backend)
    return MaxUnpool2d.apply(x, indices, unpool_output_hw(x.shape, spec, output_size, owner))


def unpool_output_hw(x_shape: tuple[int, ...], spec: UnpoolSpec, output_size: Any, owner: str) -> tuple[int, int]:
    """PyTorch's: (H - 1) * stride - 2 * padding + kernel per axis, or ``output_size`` ((H, W) or
    (N, C, H, W)) within stride of it."""
    kernel, stride, padding = spec
    default = [(x_shape[2 + d] - 1) * stride[d] - 2 * padding[d] + kernel[d] for d in range(2)]
    if output_size is None:
        if min(default) < 1:
            raise ValueError(f"{owner}: the unpooled size {tuple(default)} of input shape {tuple(x_shape)} is empty")
        return default[0], default[1]
    size = tuple(output_size)
    if len(size) == 4:
        size = size[2:]
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
        raise ValueError(f"{owner}: output_size must be (H, W) or (N, C, H, W), got {output_size!r}")
    for d in range(2):
        low, high = default[d] - stride[d], default[d] + stride[d]
        if not (low < size[d] < high) or size[d] < 1:
            raise ValueError(f"{owner}: output_size {tuple(size)} must lie strictly between "
                             f"{tuple(v - s for v, s in zip(default, stride))} and "
                             f"{tuple(v + s for v, s in zip(default, stride))} for input shape {tuple(x_shape)}")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------------------- PyTorch's arguments
def max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    check_unsupported_pool_options("max_pool2d", dilation=dilation)
    x, pool = as_tensor(input, "max_pool2d"), pool_spec(kernel_size, stride, padding, ceil_mode, "max_pool2d")
    return run_max_pool2d_with_indices(x, pool) if return_indices else run_max_pool2d(x, pool)


def relu_max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                    ceil_mode: bool = False) -> Tensor:
    """max_pool2d(relu(x)) with one backward step (the ReLU mask on the pooled gradient)."""
    return run_relu_max_pool2d(as_tensor(input, "relu_max_pool2d"),
                               pool_spec(kernel_size, stride, padding, ceil_mode, "relu_max_pool2d"))


def adaptive_max_pool2d(input: Any, output_size: Any, return_indices: bool = False) -> Any:
    """Max pooling to a fixed output size over PyTorch's adaptive windows; ``(y, indices)`` with
    ``return_indices`` (int64 indices into each input plane, as max_pool2d's)."""
    return run_adaptive_max_pool2d(as_tensor(input, "adaptive_max_pool2d"), output_size, bool(return_indices))


def max_unpool2d(input: Any, indices: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """Zeros of the unpooled size with each input at its index (max_pool2d's return_indices)."""
    return run_max_unpool2d(as_tensor(input, "max_unpool2d"), indices,
                            unpool_spec(kernel_size, stride, padding, "max_unpool2d"), output_size)
