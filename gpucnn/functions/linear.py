"""Linear: y = x @ W.T + b, x: (*, in) -> y: (*, out), W: (out, in) as in PyTorch; with ``relu=True``
(Sequential's Linear -> ReLU) y = max(x @ W.T + b, 0) in the same op."""

from __future__ import annotations

from typing import Any

from ..core.autograd import Function
from ..core.tensor import Tensor
from .checks import as_tensor, check_float_input, check_same_dtype, optional_tensor

#: its part of the functional API (gpucnn.functional lists every module's)
__all__ = ["linear"]


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

    @staticmethod
    def symbolic(g, x, w, b, relu):
        if x.ndim == 2:
            y = g.op("Gemm", [x, w] + ([b] if b is not None else []), transB=1)
        else:
            y = g.op("MatMul", [x, g.op("Transpose", [w], perm=[1, 0])])
            y = g.op("Add", [y, b]) if b is not None else y
        return g.op("Relu", [y]) if relu else y  # Sequential's Linear -> ReLU runs as one call


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    """x: (*, in) @ weight.T (out, in) + bias -> (*, out)."""
    x, w = as_tensor(input, "linear"), as_tensor(weight, "linear")
    check_float_input(x, None, "linear", layout="(N, C)")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: expected input of shape (*, {w.shape[1]}), got {x.shape}")
    check_same_dtype(x, w, "linear")
    return Linear.apply(x, w, optional_tensor(bias, "linear"))
