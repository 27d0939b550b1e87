"""Argument handling shared by the pooling Functions (max, average, L_p) and the conv -> pool fusion."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..core.tensor import Tensor
from ..shapes import pair, pool_output_hw
from .checks import check_float_input, positive_pair


class PoolSpec(NamedTuple):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil_mode: bool


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


#: options PyTorch's pooling has and ours lacks, with the value that means "off"
_UNSUPPORTED_POOL = {"dilation": 1, "divisor_override": None}


def check_unsupported_pool_options(owner: str, **options: Any) -> None:
    for name, value in options.items():
        off = _UNSUPPORTED_POOL[name]
        if not (value == off or (name == "dilation" and value == (1, 1))):
            raise ValueError(f"{owner}: {name}={value!r} is not supported by gpucnn (PyTorch has it; gpucnn's "
                             f"pooling kernels do not); leave {name} at {off!r}")
