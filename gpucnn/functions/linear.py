"""Linear: y = x @ W.T + b, x: (*, in) -> y: (*, out), W: (out, in) as in PyTorch; with ``relu=True``
(Sequential's Linear -> ReLU) y = max(x @ W.T + b, 0) in the same op."""

from __future__ import annotations

from ..core.autograd import Function


class Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b, relu: bool = False):
        ctx.has_bias = b is not None
        y = ctx.backend.linear_forward(x, w, b, relu=relu)
        ctx.save_for_backward(x, w, y if relu else None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, y = ctx.saved_tensors  # y: the output, kept for the ReLU mask when relu=True
        dx, dw, db = ctx.backend.linear_backward(dy, x, w, need_input_grad=ctx.needs_input_grad[0], relu_output=y)
        needs = ctx.needs_input_grad
        return dx, dw if needs[1] else None, db if ctx.has_bias and needs[2] else None, None
