"""Argument handling shared by the pooling Functions (max, average, L_p)."""

from __future__ import annotations

from typing import Any

from ..core.tensor import Tensor
from ..shapes import pair, pool_output_hw
from .checks import check_float_input, positive_pair
from .conv2d import PoolSpec


def pool_spec(kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool, owner: str) -> PoolSpec:
    """A checked PoolSpec; ``stride=None`` means the kernel size, as in PyTorch."""
    kernel = positive_pair(kernel_size, "kernel_size", owner)
    stride = kernel if stride is None else positive_pair(stride, "stride", owner)
    padding = pair(padding, "padding", owner)
    if any(p < 0 or 2 * p > k for p, k in zip(padding, kernel)):
        # PyTorch's rule: a window must never lie wholly in the padding
        raise ValueError(f"{owner}: padding must be between 0 and half the kernel size {kernel}, got {padding}")
    return PoolSpec(kernel, stride, padding, bool(ceil_mode))


def check_pool_input(x: Tensor, pool: PoolSpec, owner: str) -> None:
    check_float_input(x, 4, owner)
    oh, ow = pool_output_hw(x.shape[2:], pool.kernel, pool.stride, pool.padding, pool.ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"{owner}: kernel {pool.kernel} is larger than the padded input for input shape "
                         f"{x.shape} (padding {pool.padding})")
