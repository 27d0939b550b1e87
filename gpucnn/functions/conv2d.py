"""Convolution Functions over the backend's conv2d ops, and the Conv2d -> ReLU -> MaxPool2d fusion.

Shapes: x (N, C, H, W), w (K, C/groups, KH, KW), b (K,) -> y (N, K, OH, OW); ``ConvSpec`` carries
stride (sh, sw), padding (top, bottom, left, right), dilation (dh, dw) and groups, as ConvGeometry
does in kernels/conv2d.cu.

``conv2d``, ``conv1d``, ``conv2d_relu_max_pool2d`` and ``expand_connections`` take PyTorch's
arguments (``gpucnn.functional`` re-exports them); the ``run_*`` entry points take a checked spec and
the calling layer's name (the nn layers build their spec once, in the constructor).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..core.autograd import Function
from ..core.tensor import Tensor
from ..shapes import conv_output_hw, pair, pool_output_hw
from .checks import as_tensor, check_float_input, check_same_dtype, optional_tensor, positive_int, positive_pair
from .pooling import PoolSpec, pool_spec

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["conv1d", "conv2d", "conv2d_relu_max_pool2d", "expand_connections"]


class ConvSpec(NamedTuple):
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int


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


def conv_spec(weight_hw: tuple[int, int], stride: Any, padding: Any, dilation: Any, groups: int,
              owner: str) -> ConvSpec:
    positive_int(groups, "groups", owner)
    stride = positive_pair(stride, "stride", owner)
    dilation = positive_pair(dilation, "dilation", owner)
    return ConvSpec(stride, resolve_padding(padding, weight_hw, stride, dilation, owner), dilation, groups)


def conv1d_spec(kernel: int, stride: int, padding: Any, dilation: int, groups: int, owner: str) -> ConvSpec:
    """The spec of the (1, kernel) conv2d a 1-D convolution runs as."""
    for label, value in (("stride", stride), ("dilation", dilation)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{owner}: {label} must be an int, got {value!r}")
    if not isinstance(padding, str) and (not isinstance(padding, int) or isinstance(padding, bool)):
        raise TypeError(f"{owner}: padding must be an int, 'valid', 'same' or 'full', got {padding!r}")
    spec = conv_spec((1, kernel), (1, stride), padding if isinstance(padding, str) else (0, padding),
                     (1, dilation), groups, owner)
    return spec._replace(padding=(0, 0) + spec.padding[2:])  # the height axis has size 1: never pad it


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

    @staticmethod
    def symbolic(g, x, w, b, spec, relu):
        y = g.conv(x, w, b, spec)
        return g.op("Relu", [y]) if relu else y


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

    @staticmethod
    def symbolic(g, x, w, b, spec, pool):
        # ONNX's three ops; the pooling's attributes need the convolution's output shape
        conv_shape = (x.shape[0], w.shape[0]) + conv_output_hw(x.shape, w.shape, spec.stride, spec.padding,
                                                               spec.dilation)
        return g.max_pool(g.op("Relu", [g.conv(x, w, b, spec)]), conv_shape, pool)


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

    @staticmethod
    def symbolic(g, packed, index, dense_shape):
        # a function of the packed parameter alone: the file holds the traced dense bank, under the packed
        # parameter's name (which the state_dict and the exported file then share)
        return g.fold(packed)


def run_conv2d(x: Tensor, w: Tensor, b: Tensor | None, spec: ConvSpec, owner: str = "conv2d",
               relu: bool = False) -> Tensor:
    # x: (N, C, H, W) -> y: (N, K, OH, OW)
    check_conv_input(x, w, spec, owner)
    return Conv2d.apply(x, w, b, spec, relu)


def run_conv2d_relu_max_pool2d(x: Tensor, w: Tensor, b: Tensor | None, spec: ConvSpec, pool: PoolSpec,
                               owner: str = "conv2d_relu_max_pool2d") -> Tensor:
    # x: (N, C, H, W) -> y: (N, K, PH, PW)
    check_conv_input(x, w, spec, owner)
    conv_hw = conv_output_hw(x.shape, w.shape, spec.stride, spec.padding, spec.dilation)
    if min(pool_output_hw(conv_hw, pool.kernel, pool.stride, pool.padding, pool.ceil_mode)) < 1:
        raise ValueError(f"{owner}: pooling kernel {pool.kernel} is larger than the padded convolution output "
                         f"{conv_hw} (padding {pool.padding})")
    return Conv2dReluMaxPool2d.apply(x, w, b, spec, pool)


def conv1d_as_2d(x: Tensor, w: Tensor, b: Tensor | None, spec: ConvSpec, owner: str) -> Tensor:
    # x: (N, C, L) -> y: (N, K, OL)
    n, c, length = x.shape
    y = run_conv2d(x.reshape(n, c, 1, length), w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]), b, spec, owner)
    return y.reshape(y.shape[0], y.shape[1], y.shape[3])


# ---------------------------------------------------------------------------- PyTorch's arguments
def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Tensor:
    """x: (N, C, H, W), weight: (K, C/groups, KH, KW) -> (N, K, OH, OW); padding may be an int, a
    pair, 'valid', 'same' or 'full'."""
    x, w = as_tensor(input, "conv2d"), as_tensor(weight, "conv2d")
    if w.ndim != 4:
        raise ValueError(f"conv2d: expected a 4-D weight (K, C/groups, KH, KW), got shape {w.shape}")
    spec = conv_spec(w.shape[2:], stride, padding, dilation, groups, "conv2d")
    return run_conv2d(x, w, optional_tensor(bias, "conv2d"), spec)


def conv1d(input: Any, weight: Any, bias: Any = None, stride: int = 1, padding: Any = 0, dilation: int = 1,
           groups: int = 1) -> Tensor:
    """x: (N, C, L), weight: (K, C/groups, KL) -> (N, K, OL), run as a (1, KL) conv2d."""
    x, w = as_tensor(input, "conv1d"), as_tensor(weight, "conv1d")
    check_float_input(x, 3, "conv1d", layout="(N, C, L)")
    if w.ndim != 3:
        raise ValueError(f"conv1d: expected a 3-D weight (K, C/groups, KL), got shape {w.shape}")
    spec = conv1d_spec(w.shape[2], stride, padding, dilation, groups, "conv1d")
    return conv1d_as_2d(x, w, optional_tensor(bias, "conv1d"), spec, "conv1d")


def expand_connections(packed: Tensor, index: tuple[Any, Any], dense_shape: tuple[int, ...]) -> Tensor:
    """A connection table's packed filters as a dense, zero-filled (K, C, KH, KW) bank (differentiable)."""
    return ExpandConnections.apply(packed, index, dense_shape)


def conv2d_relu_max_pool2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                           dilation: Any = 1, groups: int = 1, kernel_size: Any = 2, pool_stride: Any = None,
                           pool_padding: Any = 0, ceil_mode: bool = False) -> Tensor:
    """max_pool2d(relu(conv2d(x))) as one op, bit for bit the three in a row (Sequential uses it
    for Conv2d -> ReLU -> MaxPool2d; call it from your own forward for the same speed)."""
    owner = "conv2d_relu_max_pool2d"
    x, w = as_tensor(input, owner), as_tensor(weight, owner)
    spec = conv_spec(w.shape[2:], stride, padding, dilation, groups, owner)
    pool = pool_spec(kernel_size, pool_stride, pool_padding, ceil_mode, owner)
    return run_conv2d_relu_max_pool2d(x, w, optional_tensor(bias, owner), spec, pool)
