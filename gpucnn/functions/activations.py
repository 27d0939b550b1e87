"""Elementwise activations (any shape), over the backend ops that kernels/activations.cu implements."""

from __future__ import annotations

from ..core.autograd import Function


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
