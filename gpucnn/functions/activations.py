"""Elementwise activations (any shape), over the backend ops that kernels/activations.cu implements."""

from __future__ import annotations

from typing import Any

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import activation_input

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["leaky_relu", "relu", "sigmoid", "silu", "tanh"]


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


# ---------------------------------------------------------------------------- PyTorch's arguments
def relu(input: Any, inplace: bool = False) -> Tensor:
    return Relu.apply(activation_input(input, "relu"))


def leaky_relu(input: Any, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return LeakyRelu.apply(activation_input(input, "leaky_relu"), float(negative_slope))


def sigmoid(input: Any) -> Tensor:
    return Sigmoid.apply(activation_input(input, "sigmoid"))


def silu(input: Any, inplace: bool = False) -> Tensor:
    """x * sigmoid(x). ``inplace`` is accepted for PyTorch's signature; the result is a new tensor
    either way (the values are the same)."""
    return Silu.apply(activation_input(input, "silu"))


def tanh(input: Any) -> Tensor:
    return Tanh.apply(activation_input(input, "tanh"))
