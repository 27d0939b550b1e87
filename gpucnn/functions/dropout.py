"""Dropout: the mask is a hash of (seed, element index), identical on every backend."""

from __future__ import annotations

from ..autograd import Function


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p: float, seed: int):
        y, mask = ctx.backend.dropout_forward(x, p, seed)
        ctx.p = p
        ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        return ctx.backend.dropout_backward(dy, mask, ctx.p), None, None
