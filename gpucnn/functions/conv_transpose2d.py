"""The transposed convolution (PyTorch's ConvTranspose2d), over the backend's conv2d gradient ops.

Shapes: x (N, C, H, W), w (C, K/groups, KH, KW), b (K,) -> y (N, K, OH, OW) with
OH = (H - 1)*sh - pt - pb + dh*(KH - 1) + oph + 1 (likewise OW).

It is the gradient of the convolution ``conv2d(y, w)`` with respect to its input: the forward is the
backend's ``conv2d_input_grad`` (x in the role of the output gradient, y's shape as the conv's input
shape; output_padding enlarges it at the bottom/right, rows no window reaches), the backward the
conv forward of dy (dx) and ``conv2d_weight_grad`` with the roles swapped (dw: the weight gradient
of the conv whose input is dy and whose output gradient is x). The bias is a broadcast add after.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..core.autograd import Function
from ..core.tensor import Tensor
from ..shapes import conv_output_hw, pair
from .checks import as_tensor, check_float_input, check_same_dtype, optional_tensor, positive_int, positive_pair
from .conv2d import ConvSpec

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["conv_transpose2d"]


class ConvTransposeSpec(NamedTuple):
    conv: ConvSpec  # the convolution whose input gradient this is
    output_padding: tuple[int, int]


def _non_negative_pair(value: Any, label: str, owner: str) -> tuple[int, int]:
    result = pair(value, label, owner)
    if min(result) < 0:
        raise ValueError(f"{owner}: {label} must be >= 0, got {value!r}")
    return result


def conv_transpose_spec(stride: Any, padding: Any, output_padding: Any, dilation: Any, groups: int,
                        owner: str) -> ConvTransposeSpec:
    """The checked spec; padding is an int or a pair (PyTorch's transposed convolution takes no strings)."""
    positive_int(groups, "groups", owner)
    stride = positive_pair(stride, "stride", owner)
    dilation = positive_pair(dilation, "dilation", owner)
    if isinstance(padding, str):
        raise ValueError(f"{owner}: padding must be an int or a pair of ints, got {padding!r}")
    ph, pw = _non_negative_pair(padding, "padding", owner)
    extra = _non_negative_pair(output_padding, "output_padding", owner)
    if any(o >= s and o >= d for o, s, d in zip(extra, stride, dilation)):
        raise ValueError(f"{owner}: output_padding must be smaller than either stride or dilation, got "
                         f"output_padding {extra}, stride {stride}, dilation {dilation}")
    return ConvTransposeSpec(ConvSpec(stride, (ph, ph, pw, pw), dilation, groups), extra)


def transposed_output_shape(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                            spec: ConvTransposeSpec) -> tuple[int, int, int, int]:
    """(N, K, OH, OW) of the transposed convolution of x (N, C, H, W) with w (C, K/groups, KH, KW)."""
    (sh, sw), (pt, pb, pl, pr), (dh, dw), groups = spec.conv
    oph, opw = spec.output_padding
    oh = (x_shape[2] - 1) * sh - pt - pb + dh * (w_shape[2] - 1) + oph + 1
    ow = (x_shape[3] - 1) * sw - pl - pr + dw * (w_shape[3] - 1) + opw + 1
    return (x_shape[0], w_shape[1] * groups, oh, ow)


def check_transposed_input(x: Tensor, w: Tensor, spec: ConvTransposeSpec, owner: str) -> None:
    """Reject what the op cannot take, naming ``owner`` (the layer or function)."""
    if w.ndim != 4:
        raise ValueError(f"{owner}: expected a 4-D weight (C, K/groups, KH, KW), got shape {w.shape}")
    groups = spec.conv.groups
    if w.shape[0] % groups:
        raise ValueError(f"{owner}: the weight's {w.shape[0]} input channels are not divisible by groups ({groups})")
    check_float_input(x, 4, owner, w.shape[0])
    check_same_dtype(x, w, owner)
    out = transposed_output_shape(x.shape, w.shape, spec)
    if min(out[2:]) < 1:
        raise ValueError(f"{owner}: the output size {out[2:]} for input shape {x.shape} is not positive "
                         f"(padding {spec.conv.padding} is too large)")


class ConvTranspose2d(Function):
    """y = the conv input gradient of x; dx = conv2d(dy, w), dw = the conv weight gradient (dy as its input,
    x as its output gradient)."""

    @staticmethod
    def forward(ctx, x, w, spec: ConvTransposeSpec):
        ctx.spec = spec
        ctx.save_for_backward(x, w)
        return ctx.backend.conv2d_input_grad(x, w, transposed_output_shape(x.shape, w.shape, spec), *spec.conv)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        conv = ctx.spec.conv
        h, wd = x.shape[2:]
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = ctx.backend.conv2d_forward(dy, w, None, *conv)
            if dx.shape[2:] != (h, wd):  # an output_padding of stride or more reaches rows x has not
                dx = ctx.xp.ascontiguousarray(dx[:, :, :h, :wd])
        if ctx.needs_input_grad[1]:
            reach = conv_output_hw(dy.shape, w.shape, conv.stride, conv.padding, conv.dilation)
            grad_out = x
            if reach != (h, wd):  # the conv of dy has those rows too: their output gradient is zero
                grad_out = ctx.xp.zeros(x.shape[:2] + reach, dtype=x.dtype)
                grad_out[:, :, :h, :wd] = x
            dw, _ = ctx.backend.conv2d_weight_grad(grad_out, dy, w.shape, *conv)
        return dx, dw, None

    @staticmethod
    def symbolic(g, x, w, spec):
        (sh, sw), (pt, pb, pl, pr), (dh, dw), groups = spec.conv
        return g.op("ConvTranspose", [x, w], kernel_shape=list(w.shape[2:]), strides=[sh, sw], pads=[pt, pl, pb, pr],
                    dilations=[dh, dw], group=groups, output_padding=list(spec.output_padding))


def run_conv_transpose2d(x: Tensor, w: Tensor, b: Tensor | None, spec: ConvTransposeSpec,
                         owner: str = "conv_transpose2d") -> Tensor:
    # x: (N, C, H, W) -> y: (N, K, OH, OW)
    check_transposed_input(x, w, spec, owner)
    y = ConvTranspose2d.apply(x, w, spec)
    if b is not None:
        if b.shape != (y.shape[1],):
            raise ValueError(f"{owner}: expected a bias of shape ({y.shape[1]},), got {b.shape}")
        y = y + b.reshape(1, -1, 1, 1)
    return y


# ---------------------------------------------------------------------------- PyTorch's arguments
def conv_transpose2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """x: (N, C, H, W), weight: (C, K/groups, KH, KW), bias: (K,) -> (N, K, OH, OW), as PyTorch's."""
    owner = "conv_transpose2d"
    x, w = as_tensor(input, owner), as_tensor(weight, owner)
    spec = conv_transpose_spec(stride, padding, output_padding, dilation, groups, owner)
    return run_conv_transpose2d(x, w, optional_tensor(bias, owner), spec, owner)
