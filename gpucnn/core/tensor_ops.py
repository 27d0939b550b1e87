"""Tensor arithmetic, elementwise math and reductions, written on the backend's array namespace (``ctx.xp``).

The Functions here compute new values: broadcast arithmetic (add, sub, mul, div, neg, pow, matmul),
elementwise math (exp, log, sqrt, clamp, where), comparisons (bool results, no gradient) and
reductions (sum, mean, max, min, argmax/argmin), with ``sum_to_shape``, which undoes broadcasting in
their gradients. Those that only move or select
data (reshape, permute, expand, indexing, cat, stack, split, the copy to another backend) are in
shape_ops.py; the CNN layers' ops live beside their kernels' names in gpucnn/functions/. Each
Function's ``symbolic`` writes its ONNX ops (gpucnn.onnx calls it with the forward's arguments,
each Tensor replaced by its ONNX value name).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .autograd import Function
from .tensor import Tensor


def sum_to_shape(g: Any, shape: tuple[int, ...]) -> Any:
    """Undo broadcasting: sum ``g`` over the axes that broadcasting added or stretched."""
    if tuple(g.shape) == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape) if n == 1 and g.shape[extra + i] != 1)
    g = g.sum(axis=axes, keepdims=True) if axes else g
    return g.reshape(shape)


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, dy):
        return sum_to_shape(dy, ctx.shapes[0]), sum_to_shape(dy, ctx.shapes[1])

    @staticmethod
    def symbolic(g, a, b):
        return g.op("Add", [a, b])


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, dy):
        db = sum_to_shape(-dy, ctx.shapes[1]) if ctx.needs_input_grad[1] else None
        return sum_to_shape(dy, ctx.shapes[0]), db

    @staticmethod
    def symbolic(g, a, b):
        return g.op("Sub", [a, b])


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        da = sum_to_shape(dy * b, a.shape) if ctx.needs_input_grad[0] else None
        db = sum_to_shape(dy * a, b.shape) if ctx.needs_input_grad[1] else None
        return da, db

    @staticmethod
    def symbolic(g, a, b):
        return g.op("Mul", [a, b])


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        da = sum_to_shape(dy / b, a.shape) if ctx.needs_input_grad[0] else None
        db = sum_to_shape(-dy * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return da, db

    @staticmethod
    def symbolic(g, a, b):
        return g.op("Div", [a, b])


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, dy):
        return -dy

    @staticmethod
    def symbolic(g, a):
        return g.op("Neg", [a])


class Pow(Function):
    """x ** p for a constant exponent."""

    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return a ** a.dtype.type(exponent)

    @staticmethod
    def backward(ctx, dy):
        (a,) = ctx.saved_tensors
        p = a.dtype.type(ctx.exponent)
        return dy * p * a ** (p - 1), None

    @staticmethod
    def symbolic(g, a, exponent):
        return g.op("Pow", [a, g.scalar(exponent, a.dtype, "exponent")])


class MatMul(Function):
    """a @ b for 1-D and 2-D operands, and batched (..., M, K) @ (..., K, N)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        xp = ctx.xp
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        dy2 = dy.reshape(dy.shape + (1,) if b.ndim == 1 else dy.shape)
        if a.ndim == 1:  # y has no row axis: put back the one a2 has, just before the columns
            dy2 = dy2.reshape(dy2.shape[:-1] + (1,) + dy2.shape[-1:])
        da = db = None
        if ctx.needs_input_grad[0]:
            da = sum_to_shape(dy2 @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            db = sum_to_shape(xp.swapaxes(a2, -1, -2) @ dy2, b2.shape).reshape(b.shape)
        return da, db

    @staticmethod
    def symbolic(g, a, b):
        return g.op("MatMul", [a, b])


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        y = ctx.xp.exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * y

    @staticmethod
    def symbolic(g, a):
        return g.op("Exp", [a])


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.log(a)

    @staticmethod
    def backward(ctx, dy):
        (a,) = ctx.saved_tensors
        return dy / a

    @staticmethod
    def symbolic(g, a):
        return g.op("Log", [a])


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        y = ctx.xp.sqrt(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy / (y + y)

    @staticmethod
    def symbolic(g, a):
        return g.op("Sqrt", [a])


class Clamp(Function):
    """min(max(a, lo), hi) for scalar bounds (either may be None); the gradient passes where
    lo <= a <= hi, as PyTorch's."""

    @staticmethod
    def forward(ctx, a, min, max):  # noqa: A002  (PyTorch's names)
        ctx.save_for_backward(a)
        ctx.bounds = (min, max)
        y = a
        if min is not None:
            y = ctx.xp.maximum(y, a.dtype.type(min))
        if max is not None:
            y = ctx.xp.minimum(y, a.dtype.type(max))
        return y if y is not a else a.copy()

    @staticmethod
    def backward(ctx, dy):
        (a,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        keep = ctx.xp.ones(a.shape, bool)
        if lo is not None:
            keep &= a >= a.dtype.type(lo)
        if hi is not None:
            keep &= a <= a.dtype.type(hi)
        return dy * keep.astype(dy.dtype), None, None

    @staticmethod
    def symbolic(g, a, min, max):  # noqa: A002
        lo = "" if min is None else g.scalar(min, a.dtype, "min")
        hi = "" if max is None else g.scalar(max, a.dtype, "max")
        inputs = [a, lo] + ([hi] if hi else [])
        return g.op("Clip", inputs)


def _axes(dim: Any, ndim: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted(d % ndim for d in dims))


class Sum(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim):
        ctx.shape, ctx.axes = a.shape, _axes(dim, a.ndim)
        return a.sum(axis=ctx.axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, dy):
        return _spread(ctx, dy), None, None

    @staticmethod
    def symbolic(g, a, dim, keepdim):
        return _reduce(g, "ReduceSum", a, dim, keepdim)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim):
        ctx.shape, ctx.axes = a.shape, _axes(dim, a.ndim)
        return a.mean(axis=ctx.axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, dy):
        count = math.prod(ctx.shape[axis] for axis in ctx.axes)
        return _spread(ctx, dy / dy.dtype.type(count)), None, None

    @staticmethod
    def symbolic(g, a, dim, keepdim):
        return _reduce(g, "ReduceMean", a, dim, keepdim)


def _reduce(g: Any, op_type: str, a: Any, dim: Any, keepdim: bool) -> str:
    axes = _axes(dim, a.ndim)
    y = g.reduce(op_type, a, axes, bool(keepdim))
    g.set_batched(y, g.is_batched(a) and 0 not in axes)
    return y


def _spread(ctx, dy: Any) -> Any:
    """dy of a reduction over ``ctx.axes``, copied back over the reduced axes of ``ctx.shape``."""
    kept = [1 if i in ctx.axes else n for i, n in enumerate(ctx.shape)]
    return ctx.xp.broadcast_to(dy.reshape(kept), ctx.shape).copy()


def _extreme_forward(ctx, a, dim, keepdim, largest):
    xp = ctx.xp
    if dim is None:
        y = a.max() if largest else a.min()
        ctx.save_for_backward(a, y)
        ctx.dim = None
        return xp.asarray(y)
    index = xp.argmax(a, axis=dim) if largest else xp.argmin(a, axis=dim)  # the first extreme, as PyTorch's
    index = xp.expand_dims(index, dim)
    ctx.save_for_backward(index)
    ctx.shape, ctx.dim, ctx.keepdim = a.shape, dim, keepdim
    y = xp.take_along_axis(a, index, axis=dim)
    return y if keepdim else xp.squeeze(y, axis=dim)


def _extreme_backward(ctx, dy):
    xp = ctx.xp
    if ctx.dim is None:
        # no dim: the gradient is shared evenly among equal extremes (PyTorch's amax/amin rule)
        a, y = ctx.saved_tensors
        hit = a == y
        return dy * hit.astype(dy.dtype) / hit.sum().astype(dy.dtype), None, None  # (a device count on cupy)
    (index,) = ctx.saved_tensors
    dim = ctx.dim
    if not ctx.keepdim:
        dy = xp.expand_dims(dy, dim)
    # a one-hot of the indices along dim: each element of the gradient is written once, no scatter
    positions = xp.arange(ctx.shape[dim]).reshape((-1,) + (1,) * (len(ctx.shape) - dim - 1))
    hit = positions == index
    return xp.where(hit, dy, dy.dtype.type(0)), None, None


def _extreme_symbolic(g, op_type, a, dim, keepdim):
    axes = tuple(range(a.ndim)) if dim is None else (dim,)
    y = g.reduce(op_type, a, axes, bool(keepdim) if dim is not None else False)
    g.set_batched(y, g.is_batched(a) and 0 not in axes)
    return y


class Max(Function):
    """The largest value (``dim=None``: a 0-d array) or the largest along ``dim``, its gradient to the
    first largest as PyTorch's (shared among equal ones without a dim)."""

    @staticmethod
    def forward(ctx, a, dim, keepdim):
        return _extreme_forward(ctx, a, dim, keepdim, True)

    @staticmethod
    def backward(ctx, dy):
        return _extreme_backward(ctx, dy)

    @staticmethod
    def symbolic(g, a, dim, keepdim):
        return _extreme_symbolic(g, "ReduceMax", a, dim, keepdim)


class Min(Function):
    """As Max, for the smallest."""

    @staticmethod
    def forward(ctx, a, dim, keepdim):
        return _extreme_forward(ctx, a, dim, keepdim, False)

    @staticmethod
    def backward(ctx, dy):
        return _extreme_backward(ctx, dy)

    @staticmethod
    def symbolic(g, a, dim, keepdim):
        return _extreme_symbolic(g, "ReduceMin", a, dim, keepdim)


class ArgExtreme(Function):
    """The int64 index of the first largest (or smallest) along ``dim``: the ``indices`` of
    ``max(dim)``/``min(dim)``, recorded so that an export writes it (not differentiable)."""

    @staticmethod
    def forward(ctx, a, dim, keepdim, largest):
        xp = ctx.xp
        index = (xp.argmax(a, axis=dim) if largest else xp.argmin(a, axis=dim)).astype(np.int64)
        return xp.expand_dims(index, dim) if keepdim else index

    @staticmethod
    def backward(ctx, dy):
        return None, None, None, None

    @staticmethod
    def symbolic(g, a, dim, keepdim, largest):
        y = g.op("ArgMax" if largest else "ArgMin", [a], axis=dim, keepdims=int(keepdim), select_last_index=0)
        g.set_batched(y, g.is_batched(a) and dim != 0)
        return y


class Where(Function):
    """``a`` where ``condition`` holds, else ``b`` (all three broadcast together)."""

    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.condition, ctx.shapes = condition, (a.shape, b.shape)
        return ctx.xp.where(condition, a, b)

    @staticmethod
    def backward(ctx, dy):
        zero = dy.dtype.type(0)
        da = sum_to_shape(ctx.xp.where(ctx.condition, dy, zero), ctx.shapes[0]) if ctx.needs_input_grad[1] else None
        db = sum_to_shape(ctx.xp.where(ctx.condition, zero, dy), ctx.shapes[1]) if ctx.needs_input_grad[2] else None
        return None, da, db

    @staticmethod
    def symbolic(g, condition, a, b):
        return g.op("Where", [condition, a, b])


# ---------------------------------------------------------------------------- comparisons
def _compare_symbolic(g: Any, op_type: str, a: Any, b: Any) -> str:
    """``op_type`` on ``a`` and ``b``, each cast first to the dtype NumPy compared them in (ONNX does not
    promote; the order comparisons take no bool, so those compare bools as int8)."""
    common = np.result_type(a.dtype, b.dtype)
    if common == np.bool_ and op_type != "Equal":
        common = np.dtype(np.int8)
    to = g.onnx.helper.np_dtype_to_tensor_dtype(common)
    a, b = (x if x.dtype == common else g.op("Cast", [x], to=to) for x in (a, b))
    return g.op(op_type, [a, b])  # GreaterOrEqual and LessOrEqual need opset 12; an export writes 13 or later


class Equal(Function):
    """``a == b`` elementwise, broadcast: a bool result, recorded so that an export writes it (no gradient)."""

    @staticmethod
    def forward(ctx, a, b):
        return a == b

    @staticmethod
    def backward(ctx, dy):
        return None, None

    @staticmethod
    def symbolic(g, a, b):
        return _compare_symbolic(g, "Equal", a, b)


class NotEqual(Function):
    """``a != b``, as ``Equal``."""

    @staticmethod
    def forward(ctx, a, b):
        return a != b

    @staticmethod
    def backward(ctx, dy):
        return None, None

    @staticmethod
    def symbolic(g, a, b):
        return g.op("Not", [_compare_symbolic(g, "Equal", a, b)])


class Less(Function):
    """``a < b``, as ``Equal``."""

    @staticmethod
    def forward(ctx, a, b):
        return a < b

    @staticmethod
    def backward(ctx, dy):
        return None, None

    @staticmethod
    def symbolic(g, a, b):
        return _compare_symbolic(g, "Less", a, b)


class LessEqual(Function):
    """``a <= b``, as ``Equal``."""

    @staticmethod
    def forward(ctx, a, b):
        return a <= b

    @staticmethod
    def backward(ctx, dy):
        return None, None

    @staticmethod
    def symbolic(g, a, b):
        return _compare_symbolic(g, "LessOrEqual", a, b)


class Greater(Function):
    """``a > b``, as ``Equal``."""

    @staticmethod
    def forward(ctx, a, b):
        return a > b

    @staticmethod
    def backward(ctx, dy):
        return None, None

    @staticmethod
    def symbolic(g, a, b):
        return _compare_symbolic(g, "Greater", a, b)


class GreaterEqual(Function):
    """``a >= b``, as ``Equal``."""

    @staticmethod
    def forward(ctx, a, b):
        return a >= b

    @staticmethod
    def backward(ctx, dy):
        return None, None

    @staticmethod
    def symbolic(g, a, b):
        return _compare_symbolic(g, "GreaterOrEqual", a, b)


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """``x`` where ``condition`` is true, else ``y``, broadcast together, as ``torch.where`` (a Python
    scalar takes the other operand's dtype). ``condition``: a bool Tensor or array."""
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        raise TypeError("where: expected x or y to be a Tensor, got neither")
    x = x if isinstance(x, Tensor) else y._operand(x)
    y = y if isinstance(y, Tensor) else x._operand(y)
    if not isinstance(condition, Tensor):
        condition = Tensor(x.backend.asarray(np.asarray(condition) if isinstance(condition, (list, bool))
                                             else condition), backend=x.backend)
    if condition.dtype != np.bool_:
        raise TypeError(f"where: expected a bool condition, got dtype {condition.dtype}")
    return Where.apply(condition, x, y)


class MaxResult(NamedTuple):
    """What ``Tensor.max(dim)`` returns, as ``torch.return_types.max``."""

    values: Tensor
    indices: Tensor


class MinResult(NamedTuple):
    """What ``Tensor.min(dim)`` returns, as ``torch.return_types.min``."""

    values: Tensor
    indices: Tensor
