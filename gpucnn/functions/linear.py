"""Linear: y = x @ W.T + b, x: (*, in) -> y: (*, out), W: (out, in) as in PyTorch."""

from __future__ import annotations

from ..autograd import Function


class Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        y = x @ w.T
        if b is not None:
            y += b
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        rows = dy.reshape(-1, dy.shape[-1])
        dx = (dy @ w) if ctx.needs_input_grad[0] else None
        dw = rows.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        db = rows.sum(axis=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db
