"""Padding of the last axes: ``F.pad`` (constant, reflect, replicate, circular), the *Pad2d layers and
Conv2d's ``padding_mode``, over the backend's pad2d ops (kernels/pad.cu).

x: (N, C, H, W) -> y: (N, C, H + top + bottom, W + left + right); ``pads`` = (left, right, top, bottom),
F.pad's order (the last axis first). A pads tuple of length 2 pads the last axis only, of an (N, C, L) or
(N, C, H, W) input; one of length 4 the last two of an (N, C, H, W) input.
"""

from __future__ import annotations

from typing import Any

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import as_tensor, check_float_input

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["pad"]

MODES = ("constant", "reflect", "replicate", "circular")
_ONNX_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

Pads = tuple[int, int, int, int]


class Pad2d(Function):
    @staticmethod
    def forward(ctx, x, pads: Pads, mode: str, value: float):
        ctx.x_shape, ctx.pads, ctx.mode = x.shape, pads, mode
        return ctx.backend.pad2d_forward(x, pads, mode, value)

    @staticmethod
    def backward(ctx, dy):
        return ctx.backend.pad2d_backward(dy, ctx.x_shape, ctx.pads, ctx.mode), None, None, None

    @staticmethod
    def symbolic(g, x, pads, mode, value):
        if mode == "circular" and g.opset < 19:
            raise g.error(f"cannot export circular padding in layer {g.where} below opset 19 (ONNX Pad's 'wrap' "
                          f"mode came with opset 19); export with opset=19 or later")
        left, right, top, bottom = pads
        inputs = [x, g.ints([0, 0, top, left, 0, 0, bottom, right], "pads")]
        if mode == "constant":
            inputs.append(g.scalar(value, x.dtype, "pad_value"))
        return g.op("Pad", inputs, mode=_ONNX_MODES[mode])


def pad_tuple(pad: Any, owner: str, lengths: tuple[int, ...] = (2, 4)) -> tuple[int, ...]:
    """The pads as a tuple of ints of one of ``lengths``."""
    if isinstance(pad, (list, tuple)) and all(isinstance(p, int) and not isinstance(p, bool) for p in pad):
        if len(pad) in lengths:
            return tuple(pad)
        raise ValueError(f"{owner}: padding must have {' or '.join(map(str, lengths))} entries "
                         f"(left, right[, top, bottom]), got {len(pad)}: {tuple(pad)!r}; padding more axes is not "
                         f"supported by gpucnn yet")
    raise TypeError(f"{owner}: padding must be a tuple of ints, got {pad!r}")


def check_mode(mode: Any, owner: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{owner}: mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    return mode


def check_pads(x_shape: tuple[int, ...], pads: Pads, mode: str, owner: str) -> None:
    """PyTorch's limits: reflect pads < the axis size, circular pads <= it, and the non-constant modes
    take no negative pad; a constant pad may crop, but not past the input."""
    height, width = x_shape[-2:]
    for axis, size, before, after in (("width", width, pads[0], pads[1]), ("height", height, pads[2], pads[3])):
        if mode != "constant" and min(before, after) < 0:
            raise ValueError(f"{owner}: negative padding ({before}, {after}) is supported in constant mode only, "
                             f"got mode {mode!r}")
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(f"{owner}: reflect padding must be less than the input size on its axis, got padding "
                             f"({before}, {after}) for {axis} {size} (input shape {tuple(x_shape)})")
        if mode == "circular" and max(before, after) > size:
            raise ValueError(f"{owner}: circular padding must be at most the input size on its axis (it would "
                             f"wrap around more than once), got padding ({before}, {after}) for {axis} {size} "
                             f"(input shape {tuple(x_shape)})")
        if mode == "replicate" and size == 0 and max(before, after) > 0:
            raise ValueError(f"{owner}: replicate padding needs a non-empty {axis}, got input shape {tuple(x_shape)}")
        if size + min(before, 0) + min(after, 0) < 0:
            raise ValueError(f"{owner}: negative padding ({before}, {after}) crops more than the {axis} {size} "
                             f"(input shape {tuple(x_shape)})")


def run_pad(x: Tensor, pad: tuple[int, ...], mode: str, value: float = 0.0, owner: str = "pad") -> Tensor:
    """The layer entry point: ``pad`` of length 2 (the last axis, of an (N, C, L) or (N, C, H, W) input) or
    4 (the last two, of an (N, C, H, W) input), a checked mode, errors naming ``owner``."""
    check_float_input(x, None, owner, layout="(N, C, L) or (N, C, H, W)")
    pads = tuple(pad) + (0, 0) if len(pad) == 2 else tuple(pad)
    if x.ndim == 3 and len(pad) == 2:
        n, c, length = x.shape
        check_pads((1, length), pads, mode, owner)
        y = Pad2d.apply(x.reshape(n, c, 1, length), pads, mode, float(value))
        return y.reshape(n, c, y.shape[3])
    if x.ndim != 4:
        raise ValueError(f"{owner}: expected a 4-D input (N, C, H, W) for padding {tuple(pad)!r}"
                         f"{' or a 3-D one (N, C, L)' if len(pad) == 2 else ''}, got shape {x.shape}; other ranks "
                         f"are not supported by gpucnn yet")
    check_pads(x.shape, pads, mode, owner)
    return Pad2d.apply(x, pads, mode, float(value))


# ---------------------------------------------------------------------------- PyTorch's arguments
def pad(input: Any, pad: Any, mode: str = "constant", value: float | None = None) -> Tensor:
    """PyTorch's F.pad for the last axis (``pad`` = (left, right)) or the last two ((left, right, top,
    bottom)); ``value`` fills constant padding (default 0)."""
    x = as_tensor(input, "pad")
    mode = check_mode(mode, "pad")
    if mode != "constant" and value not in (None, 0, 0.0):
        raise ValueError(f"pad: padding mode {mode!r} doesn't take a value argument, got value={value!r}")
    return run_pad(x, pad_tuple(pad, "pad"), mode, 0.0 if value is None else value)
