"""Tensor operators and shape ops, written on the backend's array namespace (``ctx.xp``).

These are glue (broadcast arithmetic, reductions, reshapes); the CNN layers' ops live beside
their kernels' names in the other files of this package.
"""

from __future__ import annotations

import math
from typing import Any

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


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, dy):
        db = sum_to_shape(-dy, ctx.shapes[1]) if ctx.needs_input_grad[1] else None
        return sum_to_shape(dy, ctx.shapes[0]), db


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


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, dy):
        return -dy


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


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.log(a)

    @staticmethod
    def backward(ctx, dy):
        (a,) = ctx.saved_tensors
        return dy / a


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


class Mean(Function):
    @staticmethod
    def forward(ctx, a, dim, keepdim):
        ctx.shape, ctx.axes = a.shape, _axes(dim, a.ndim)
        return a.mean(axis=ctx.axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, dy):
        count = math.prod(ctx.shape[axis] for axis in ctx.axes)
        return _spread(ctx, dy / dy.dtype.type(count)), None, None


def _spread(ctx, dy: Any) -> Any:
    """dy of a reduction over ``ctx.axes``, copied back over the reduced axes of ``ctx.shape``."""
    kept = [1 if i in ctx.axes else n for i, n in enumerate(ctx.shape)]
    return ctx.xp.broadcast_to(dy.reshape(kept), ctx.shape).copy()


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        return dy.reshape(ctx.shape), None


class GetItem(Function):
    """Indexing and slicing; repeated integer indices add up their gradients."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, dy):
        xp = ctx.xp
        dx = xp.zeros(ctx.shape, ctx.dtype)
        if _is_basic_index(ctx.index):
            dx[ctx.index] = dy
        else:
            xp.add.at(dx, ctx.index, dy)
        return dx, None


def _is_basic_index(index: Any) -> bool:
    """Slices, ints, None and Ellipsis select each element at most once."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in items)


class Cat(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim % arrays[0].ndim
        ctx.sizes = [a.shape[ctx.dim] for a in arrays]
        return ctx.xp.concatenate(arrays, axis=ctx.dim)

    @staticmethod
    def backward(ctx, dy):
        bounds, total = [], 0
        for size in ctx.sizes[:-1]:
            total += size
            bounds.append(total)
        pieces = ctx.xp.split(dy, bounds, axis=ctx.dim)
        return (None, *(ctx.xp.ascontiguousarray(p) for p in pieces))


class ToBackend(Function):
    """A tensor copied to another backend; its gradient is copied back."""

    @staticmethod
    def forward(ctx, a, backend):
        from ..backends.registry import get_backend

        ctx.source, ctx.backend = ctx.backend, get_backend(backend)
        if ctx.backend is ctx.source:
            return a
        return ctx.backend.asarray(ctx.source.to_numpy(a))

    @staticmethod
    def backward(ctx, dy):
        return ctx.source.asarray(ctx.backend.to_numpy(dy)), None


def cat(tensors: list[Tensor] | tuple[Tensor, ...], dim: int = 0) -> Tensor:
    """Join tensors along ``dim`` (every other axis must agree), as ``torch.cat``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    shapes = [t.shape for t in tensors]
    axis = dim % len(shapes[0]) if shapes[0] else 0
    if len({len(s) for s in shapes}) != 1 or len({s[:axis] + s[axis + 1:] for s in shapes}) != 1:
        raise ValueError(f"cat: tensors must agree on every axis but {dim}, got shapes {shapes}")
    return Cat.apply(dim, *tensors)
