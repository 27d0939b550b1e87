"""Elementwise activations (any shape), over the backend ops that kernels/activations.cu implements."""

from __future__ import annotations

import math
from typing import Any

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import activation_input, as_tensor, check_same_dtype

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["elu", "gelu", "hardsigmoid", "hardswish", "leaky_relu", "mish", "prelu", "relu", "relu6", "sigmoid",
           "silu", "softplus", "tanh"]


class Relu(Function):
    """max(x, 0); backward needs only the output."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.relu_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return ctx.backend.relu_backward(dy, y)

    @staticmethod
    def symbolic(g, x):
        return g.op("Relu", [x])


class LeakyRelu(Function):
    @staticmethod
    def forward(ctx, x, negative_slope: float):
        ctx.negative_slope = negative_slope
        ctx.save_for_backward(x)
        return ctx.backend.leaky_relu_forward(x, negative_slope)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return ctx.backend.leaky_relu_backward(dy, x, ctx.negative_slope), None

    @staticmethod
    def symbolic(g, x, negative_slope):
        return g.op("LeakyRelu", [x], alpha=float(negative_slope))


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.sigmoid_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return ctx.backend.sigmoid_backward(dy, y)

    @staticmethod
    def symbolic(g, x):
        return g.op("Sigmoid", [x])


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.tanh_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return ctx.backend.tanh_backward(dy, y)

    @staticmethod
    def symbolic(g, x):
        return g.op("Tanh", [x])


class Silu(Function):
    """x * sigmoid(x); backward needs the input."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.backend.silu_forward(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return ctx.backend.silu_backward(dy, x)

    @staticmethod
    def symbolic(g, x):
        # ONNX has no SiLU before opset 24's Swish: x * Sigmoid(x), as torch.onnx writes it
        return g.op("Mul", [x, g.op("Sigmoid", [x])])



class Relu6(Function):
    """min(max(x, 0), 6); backward needs only the output."""

    @staticmethod
    def forward(ctx, x):
        y = ctx.backend.relu6_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return ctx.backend.relu6_backward(dy, y)

    @staticmethod
    def symbolic(g, x):
        # Clip with its bounds as inputs (opset 11 on), as torch.onnx writes ReLU6
        return g.op("Clip", [x, g.scalar(0.0, x.dtype, "relu6_min"), g.scalar(6.0, x.dtype, "relu6_max")])


class Hardsigmoid(Function):
    """relu6(x + 3) / 6; backward needs the input."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.backend.hardsigmoid_forward(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return ctx.backend.hardsigmoid_backward(dy, x)

    @staticmethod
    def symbolic(g, x):
        # ONNX's max(0, min(1, alpha x + beta)) with PyTorch's slope and offset
        return g.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)


class Hardswish(Function):
    """x * relu6(x + 3) / 6; backward needs the input."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.backend.hardswish_forward(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return ctx.backend.hardswish_backward(dy, x)

    @staticmethod
    def symbolic(g, x):
        if g.opset >= 14:
            return g.op("HardSwish", [x])
        return g.op("Mul", [x, g.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)])  # HardSwish came in 14


class Gelu(Function):
    """x * Phi(x) (``approximate='none'``, with erf) or its tanh approximation; backward needs the input."""

    @staticmethod
    def forward(ctx, x, approximate: str):
        ctx.approximate = approximate
        ctx.save_for_backward(x)
        return ctx.backend.gelu_tanh_forward(x) if approximate == "tanh" else ctx.backend.gelu_forward(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        if ctx.approximate == "tanh":
            return ctx.backend.gelu_tanh_backward(dy, x), None
        return ctx.backend.gelu_backward(dy, x), None

    @staticmethod
    def symbolic(g, x, approximate):
        if g.opset >= 20:  # ONNX's Gelu, both forms, from opset 20
            return g.op("Gelu", [x], approximate=approximate)
        half_x = g.op("Mul", [x, g.scalar(0.5, x.dtype, "gelu_half")])
        one = g.scalar(1.0, x.dtype, "gelu_one")
        if approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = g.op("Mul", [g.op("Mul", [x, x]), x])
            inner = g.op("Add", [x, g.op("Mul", [cube, g.scalar(0.044715, x.dtype, "gelu_kappa")])])
            inner = g.op("Mul", [inner, g.scalar(math.sqrt(2.0 / math.pi), x.dtype, "gelu_sqrt_2_pi")])
            return g.op("Mul", [half_x, g.op("Add", [g.op("Tanh", [inner]), one])])
        # 0.5 x (1 + erf(x / sqrt(2)))
        scaled = g.op("Mul", [x, g.scalar(math.sqrt(0.5), x.dtype, "gelu_sqrt1_2")])
        return g.op("Mul", [half_x, g.op("Add", [g.op("Erf", [scaled]), one])])


class Elu(Function):
    """x where x > 0, else alpha * (exp(x) - 1); backward needs the input."""

    @staticmethod
    def forward(ctx, x, alpha: float):
        ctx.alpha = alpha
        ctx.save_for_backward(x)
        return ctx.backend.elu_forward(x, alpha)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return ctx.backend.elu_backward(dy, x, ctx.alpha), None

    @staticmethod
    def symbolic(g, x, alpha):
        return g.op("Elu", [x], alpha=float(alpha))


class Mish(Function):
    """x * tanh(softplus(x)); backward needs the input."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.backend.mish_forward(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return ctx.backend.mish_backward(dy, x)

    @staticmethod
    def symbolic(g, x):
        if g.opset >= 18:
            return g.op("Mish", [x])
        return g.op("Mul", [x, g.op("Tanh", [g.op("Softplus", [x])])])  # Mish came in 18


class Softplus(Function):
    """log(1 + exp(beta x)) / beta, x itself where beta x > threshold; backward needs the input."""

    @staticmethod
    def forward(ctx, x, beta: float, threshold: float):
        ctx.beta, ctx.threshold = beta, threshold
        ctx.save_for_backward(x)
        return ctx.backend.softplus_forward(x, beta, threshold)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return ctx.backend.softplus_backward(dy, x, ctx.beta, ctx.threshold), None, None

    @staticmethod
    def symbolic(g, x, beta, threshold):
        # ONNX's Softplus has no beta or threshold: Softplus(beta x) / beta, then Where(beta x > threshold, x, .)
        scaled = x
        if beta != 1.0:
            b = g.scalar(beta, x.dtype, "softplus_beta")
            scaled = g.op("Mul", [x, b])
            soft = g.op("Div", [g.op("Softplus", [scaled]), b])
        else:
            soft = g.op("Softplus", [x])
        past = g.op("Greater", [scaled, g.scalar(threshold, x.dtype, "softplus_threshold")])
        return g.op("Where", [past, x, soft])

# ---------------------------------------------------------------------------- PyTorch's arguments
# ``inplace`` is accepted where PyTorch's signature has it; gpucnn computes out of place, so the result is
# always a new tensor (with the values PyTorch's in-place call leaves in its input) and the input is unchanged.
def relu(input: Any, inplace: bool = False) -> Tensor:
    """max(x, 0). ``inplace`` is accepted for PyTorch's signature; the result is a new tensor either way."""
    return Relu.apply(activation_input(input, "relu"))


def leaky_relu(input: Any, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, else negative_slope * x. ``inplace`` is accepted; the result is a new tensor."""
    return LeakyRelu.apply(activation_input(input, "leaky_relu"), float(negative_slope))


def relu6(input: Any, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6). ``inplace`` is accepted; the result is a new tensor."""
    return Relu6.apply(activation_input(input, "relu6"))


def hardsigmoid(input: Any, inplace: bool = False) -> Tensor:
    """relu6(x + 3) / 6. ``inplace`` is accepted; the result is a new tensor."""
    return Hardsigmoid.apply(activation_input(input, "hardsigmoid"))


def hardswish(input: Any, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6 (MobileNetV3). ``inplace`` is accepted; the result is a new tensor."""
    return Hardswish.apply(activation_input(input, "hardswish"))


def gelu_approximate(approximate: Any, owner: str) -> str:
    """GELU's ``approximate``: 'none' (x * Phi(x), with erf) or 'tanh'."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{owner}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate


def gelu(input: Any, approximate: str = "none") -> Tensor:
    """x * Phi(x), Phi the standard normal CDF (with erf); ``approximate='tanh'``:
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return Gelu.apply(activation_input(input, "gelu"), gelu_approximate(approximate, "gelu"))


def elu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x where x > 0, else alpha * (exp(x) - 1). ``inplace`` is accepted; the result is a new tensor."""
    return Elu.apply(activation_input(input, "elu"), float(alpha))


def mish(input: Any, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x)). ``inplace`` is accepted; the result is a new tensor."""
    return Mish.apply(activation_input(input, "mish"))


def softplus_beta(beta: Any, owner: str) -> float:
    """Softplus's ``beta``: any nonzero number (it divides)."""
    beta = float(beta)
    if beta == 0.0:
        raise ValueError(f"{owner}: beta must be nonzero (softplus divides by it), got {beta!r}")
    return beta


def softplus(input: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as PyTorch)."""
    return Softplus.apply(activation_input(input, "softplus"), softplus_beta(beta, "softplus"), float(threshold))


def sigmoid(input: Any) -> Tensor:
    return Sigmoid.apply(activation_input(input, "sigmoid"))


def silu(input: Any, inplace: bool = False) -> Tensor:
    """x * sigmoid(x). ``inplace`` is accepted for PyTorch's signature; the result is a new tensor
    either way (the values are the same)."""
    return Silu.apply(activation_input(input, "silu"))


def tanh(input: Any) -> Tensor:
    return Tanh.apply(activation_input(input, "tanh"))


def prelu(input: Any, weight: Any) -> Tensor:
    """relu(x) - weight * relu(-x): x where x > 0, else weight * x, with ``weight`` (1 value, or one per
    channel, axis 1) broadcast over the other axes, as PyTorch's. A composition of the ReLU op and
    broadcasting Tensor ops, so the weight's gradient is their ordered reduction (no atomics)."""
    x = activation_input(input, "prelu")
    w = as_tensor(weight, "prelu")
    channels = x.shape[1] if x.ndim >= 2 else 1
    if w.ndim != 1 or w.shape[0] not in (1, channels):
        raise ValueError(f"prelu: expected a weight of shape (1,) or ({channels},) (the input's channels, axis 1), "
                         f"got {w.shape} for input shape {x.shape}")
    check_same_dtype(x, w, "prelu")
    if w.shape[0] != 1:
        w = w.reshape(1, channels, *([1] * (x.ndim - 2)))
    return Relu.apply(x) - w * Relu.apply(-x)
