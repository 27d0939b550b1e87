"""Convolution Functions over the backend's conv2d ops, and the Conv2d -> ReLU -> MaxPool2d fusion.

Shapes: x (N, C, H, W), w (K, C/groups, KH, KW), b (K,) -> y (N, K, OH, OW); ``ConvSpec`` carries
stride (sh, sw), padding (top, bottom, left, right), dilation (dh, dw) and groups, as ConvGeometry
does in kernels/conv2d.cu.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..core.autograd import Function
from ..core.tensor import Tensor
from ..shapes import conv_output_hw, pair, pool_output_hw
from .checks import check_float_input, check_same_dtype


class ConvSpec(NamedTuple):
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int


class PoolSpec(NamedTuple):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil_mode: bool


def resolve_padding(padding: Any, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], owner: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an int, a pair, or 'valid' / 'same' / 'full'.

    'valid' (narrow) pads nothing; 'same' keeps the size at stride 1, putting the odd pixel of
    an even kernel at the bottom/right as PyTorch does; 'full' (wide) pads d*(k-1) on each side
    so every partial overlap is computed and the output is i + d*(k-1).
    """
    if isinstance(padding, str):
        spans = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{owner}: padding='same' needs stride 1, got stride {stride}")
            return (spans[0] // 2, spans[0] - spans[0] // 2, spans[1] // 2, spans[1] - spans[1] // 2)
        if padding == "full":
            return (spans[0], spans[0], spans[1], spans[1])
        raise ValueError(f"{owner}: padding must be an int, a pair, 'valid', 'same' or 'full', got {padding!r}")
    if isinstance(padding, tuple) and len(padding) == 4 and all(isinstance(p, int) and p >= 0 for p in padding):
        return padding
    ph, pw = pair(padding, "padding", owner)
    if ph < 0 or pw < 0:
        raise ValueError(f"{owner}: padding must be >= 0, got {padding!r}")
    return (ph, ph, pw, pw)


def check_conv_input(x: Tensor, w: Tensor, spec: ConvSpec, owner: str) -> None:
    """Reject what the conv op cannot take, naming ``owner`` (the layer or function)."""
    check_float_input(x, 4, owner, w.shape[1] * spec.groups)
    check_same_dtype(x, w, owner)
    pt, pb, pl, pr = spec.padding
    span_h = spec.dilation[0] * (w.shape[2] - 1) + 1
    span_w = spec.dilation[1] * (w.shape[3] - 1) + 1
    padded = (x.shape[2] + pt + pb, x.shape[3] + pl + pr)
    if span_h > padded[0] or span_w > padded[1]:
        raise ValueError(f"{owner}: kernel of extent ({span_h}, {span_w}) is larger than the padded input "
                         f"({padded[0]}, {padded[1]}) for input shape {x.shape}")


class Conv2d(Function):
    """The convolution; ``relu=True`` rectifies in the kernel's epilogue (one pass instead of two)
    and backward then masks dy by the saved output."""

    @staticmethod
    def forward(ctx, x, w, b, spec: ConvSpec, relu: bool = False):
        ctx.spec = spec
        y = ctx.backend.conv2d_forward(x, w, b, *spec, relu=relu, keep_for_backward=ctx.records)
        ctx.save_for_backward(x, w, y if relu else None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, y = ctx.saved_tensors
        if y is not None:
            dy = ctx.backend.relu_backward(dy, y)
        dx, dw, db = ctx.backend.conv2d_backward(dy, x, w, *ctx.spec, need_input_grad=ctx.needs_input_grad[0])
        return dx, dw, db, None, None


class Conv2dReluMaxPool2d(Function):
    """maxpool2d(relu(conv2d(x))) as one backend op, bit for bit the three run one by one; the CPU
    backend pools each batch chunk while it is in cache."""

    @staticmethod
    def forward(ctx, x, w, b, spec: ConvSpec, pool: PoolSpec):
        ctx.spec, ctx.pool = spec, pool
        y, ctx.state = ctx.backend.conv2d_relu_maxpool2d_forward(x, w, b, *spec, *pool,
                                                                 keep_for_backward=ctx.records)
        ctx.save_for_backward(x, w, b)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, b = ctx.saved_tensors
        if ctx.state is None:  # a second backward (retain_graph): the first used the state up
            _, ctx.state = ctx.backend.conv2d_relu_maxpool2d_forward(x, w, b, *ctx.spec, *ctx.pool,
                                                                     keep_for_backward=True)
        state, ctx.state = ctx.state, None
        dx, dw, db = ctx.backend.conv2d_relu_maxpool2d_backward(
            dy, state, x, w, *ctx.spec, *ctx.pool[:3], need_input_grad=ctx.needs_input_grad[0])
        return dx, dw, db, None, None


class ExpandConnections(Function):
    """A packed (connections, KH, KW) filter set -> the dense (K, C, KH, KW) bank, zeros where a
    connection table (LeNet-5's C3) has no link; backward gathers the linked filters' gradients."""

    @staticmethod
    def forward(ctx, packed, index, dense_shape):
        ctx.index = index
        dense = ctx.xp.zeros(dense_shape, dtype=packed.dtype)
        dense[index] = packed
        return dense

    @staticmethod
    def backward(ctx, ddense):
        return ddense[ctx.index], None, None


def conv2d(x: Tensor, w: Tensor, b: Tensor | None, spec: ConvSpec, owner: str = "conv2d",
           relu: bool = False) -> Tensor:
    # x: (N, C, H, W) -> y: (N, K, OH, OW)
    check_conv_input(x, w, spec, owner)
    return Conv2d.apply(x, w, b, spec, relu)


def conv2d_relu_max_pool2d(x: Tensor, w: Tensor, b: Tensor | None, spec: ConvSpec, pool: PoolSpec,
                           owner: str = "conv2d_relu_max_pool2d") -> Tensor:
    # x: (N, C, H, W) -> y: (N, K, PH, PW)
    check_conv_input(x, w, spec, owner)
    conv_hw = conv_output_hw(x.shape, w.shape, spec.stride, spec.padding, spec.dilation)
    if min(pool_output_hw(conv_hw, pool.kernel, pool.stride, pool.padding, pool.ceil_mode)) < 1:
        raise ValueError(f"{owner}: pooling kernel {pool.kernel} is larger than the padded convolution output "
                         f"{conv_hw} (padding {pool.padding})")
    return Conv2dReluMaxPool2d.apply(x, w, b, spec, pool)
