"""Tensor operators and shape ops, written on the backend's array namespace (``ctx.xp``).

These are glue (broadcast arithmetic, reductions, reshapes); the CNN layers' ops live beside
their kernels' names in gpucnn/functions/. Each Function's ``symbolic`` writes its ONNX ops
(gpucnn.onnx calls it with the forward's arguments, each Tensor replaced by its ONNX value name).
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


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        return dy.reshape(ctx.shape), None

    @staticmethod
    def symbolic(g, a, shape):
        target = list(g.out_shape)  # the traced shape: ``shape`` may hold a -1
        if g.is_batched(a):
            if not target or a.shape[0] != target[0]:
                raise g.error(f"Reshape in layer {g.where} merges or moves the batch axis ({a.shape} -> "
                              f"{g.out_shape}), which a dynamic batch cannot express; export with "
                              f"dynamic_batch=False")
            target[0] = -1  # whatever batch arrives, with every other axis as traced
        y = g.op("Reshape", [a, g.ints(target, "shape")])
        g.set_batched(y, g.is_batched(a))
        return y


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

    @staticmethod
    def symbolic(g, a, index):
        return _slice(g, a, index)


def _is_basic_index(index: Any) -> bool:
    """Slices, ints, None and Ellipsis select each element at most once."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in items)


_INT64_MAX, _INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def _slice(g: Any, a: Any, index: Any) -> str:
    """Basic indexing as ONNX Slice, then Squeeze (int indices) and Unsqueeze (None)."""
    items = list(index) if isinstance(index, tuple) else [index]
    basic = (slice, int, type(None), type(Ellipsis))
    if not all(isinstance(i, basic) and not isinstance(i, bool) for i in items) or items.count(Ellipsis) > 1:
        raise g.error(f"cannot export GetItem in layer {g.where}: only basic indexing (slices, ints, None, one "
                      f"...) maps to ONNX Slice, got {index!r}")
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    at = items.index(Ellipsis) if Ellipsis in items else len(items)
    items[at:at + 1] = [slice(None)] * (a.ndim - consumed)
    batched = g.is_batched(a)
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis, out_axis = 0, 0
    for item in items:
        if item is None:
            unsqueeze.append(out_axis)
            out_axis += 1
            continue
        dynamic = axis == 0 and batched  # the traced size is no guide there: keep Python's bounds
        if isinstance(item, int):
            i = item if dynamic else item % a.shape[axis]
            starts.append(i)
            ends.append(_INT64_MAX if i == -1 else i + 1)
            steps.append(1)
            axes.append(axis)
            squeeze.append(axis)
        else:
            out_axis += 1
            if item != slice(None):
                step = 1 if item.step is None else item.step
                if dynamic:
                    start = item.start if item.start is not None else (0 if step > 0 else _INT64_MAX)
                    stop = item.stop if item.stop is not None else (_INT64_MAX if step > 0 else _INT64_MIN)
                else:
                    start, stop, step = item.indices(a.shape[axis])
                    stop = _INT64_MIN if step < 0 and stop < 0 else stop  # -1 would mean "the last" in ONNX
                starts.append(start)
                ends.append(stop)
                steps.append(step)
                axes.append(axis)
        axis += 1
    y = a
    if axes:
        y = g.op("Slice", [y, g.ints(starts, "starts"), g.ints(ends, "ends"), g.ints(axes), g.ints(steps, "steps")])
    if squeeze:
        y = g.op("Squeeze", [y, g.ints(squeeze)])
    if unsqueeze:
        y = g.op("Unsqueeze", [y, g.ints(unsqueeze)])
    if y == a:
        y = g.op("Identity", [y])
    g.set_batched(y, batched and 0 not in squeeze and 0 not in unsqueeze)
    return y


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

    @staticmethod
    def symbolic(g, dim, *arrays):
        return g.op("Concat", list(arrays), axis=dim % arrays[0].ndim)


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

    @staticmethod
    def symbolic(g, a, backend):
        return g.op("Identity", [a])


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


# ---------------------------------------------------------------------------- shape ops, clamp, max/min, where
def check_dim(dim: Any, ndim: int, op: str) -> int:
    """``dim`` in 0..ndim-1 (a negative one counted from the end), or an IndexError naming ``op``."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: expected an int dim, got {dim!r}")
    size = max(ndim, 1)
    if not -size <= dim < size:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dims "
                         f"(expected {-size}..{size - 1})")
    return int(dim) % size


def _batch_moved(g: Any, what: str) -> Any:
    return g.error(f"{what} in layer {g.where} moves the batch axis, which a dynamic batch cannot express; "
                   f"export with dynamic_batch=False")


class Permute(Function):
    """The axes reordered: output axis i is input axis ``dims[i]``."""

    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return ctx.xp.ascontiguousarray(ctx.xp.transpose(a, dims))

    @staticmethod
    def backward(ctx, dy):
        inverse = tuple(int(i) for i in np.argsort(ctx.dims))
        return ctx.xp.ascontiguousarray(ctx.xp.transpose(dy, inverse)), None

    @staticmethod
    def symbolic(g, a, dims):
        batched = g.is_batched(a)
        if batched and dims and dims[0] != 0:
            raise _batch_moved(g, f"Permute {tuple(dims)}")
        y = g.op("Transpose", [a], perm=list(dims))
        g.set_batched(y, batched)
        return y


class Expand(Function):
    """Broadcast to ``shape`` (no -1 left: Tensor.expand resolves them); the gradient sums back."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return ctx.xp.ascontiguousarray(ctx.xp.broadcast_to(a, shape))

    @staticmethod
    def backward(ctx, dy):
        return sum_to_shape(dy, ctx.shape), None

    @staticmethod
    def symbolic(g, a, shape):
        target = list(shape)
        batched = g.is_batched(a)
        if batched:
            if len(shape) != a.ndim or a.shape[0] != shape[0]:
                raise _batch_moved(g, f"Expand {a.shape} -> {tuple(shape)}")
            target[0] = 1  # ONNX Expand broadcasts: 1 keeps whatever batch arrives
        y = g.op("Expand", [a, g.ints(target, "shape")])
        g.set_batched(y, batched)
        return y


class SplitPiece(Function):
    """Piece ``index`` of ``a`` split along ``dim`` into ``sizes`` (one call per piece, so that each
    piece is a one-output op; their gradients add up into ``a``'s)."""

    @staticmethod
    def forward(ctx, a, dim, sizes, index):
        start = sum(sizes[:index])
        ctx.shape, ctx.dtype = a.shape, a.dtype
        ctx.where = (slice(None),) * dim + (slice(start, start + sizes[index]),)
        return ctx.xp.ascontiguousarray(a[ctx.where])

    @staticmethod
    def backward(ctx, dy):
        dx = ctx.xp.zeros(ctx.shape, ctx.dtype)
        dx[ctx.where] = dy  # each element written once
        return dx, None, None, None

    @staticmethod
    def symbolic(g, a, dim, sizes, index):
        batched = g.is_batched(a)
        if batched and dim == 0:
            raise g.error(f"Split along the batch axis in layer {g.where} has sizes fixed by the traced batch; "
                          f"export with dynamic_batch=False")
        # the pieces of one split share one Split node (each piece's call finds the one the first made)
        cache = g.__dict__.setdefault("_split_outputs", {})
        key = (str(a), dim, tuple(sizes))
        if key not in cache:
            outputs = g.op("Split", [a, g.ints(sizes, "split")], outputs=len(sizes), axis=dim)
            cache[key] = [outputs] if len(sizes) == 1 else outputs
            for name in cache[key]:
                g.set_batched(name, batched)
        return cache[key][index]


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


class Stack(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        return ctx.xp.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, dy):
        xp = ctx.xp
        return (None, *(xp.ascontiguousarray(xp.take(dy, i, axis=ctx.dim)) for i in range(dy.shape[ctx.dim])))

    @staticmethod
    def symbolic(g, dim, *arrays):
        batched = any(g.is_batched(a) for a in arrays)
        if batched and dim == 0:
            raise _batch_moved(g, "Stack along axis 0")
        axes = g.ints([dim])
        y = g.op("Concat", [g.op("Unsqueeze", [a, axes]) for a in arrays], axis=dim)
        g.set_batched(y, batched)
        return y


def stack(tensors: list[Tensor] | tuple[Tensor, ...], dim: int = 0) -> Tensor:
    """Join same-shaped tensors along a new axis ``dim``, as ``torch.stack``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    shapes = [tuple(t.shape) for t in tensors]
    if len(set(shapes)) != 1:
        raise ValueError(f"stack: expected tensors of one shape, got shapes {shapes}")
    return Stack.apply(check_dim(dim, len(shapes[0]) + 1, "stack"), *tensors)


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


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """``input.flatten(start_dim, end_dim)``, as ``torch.flatten``."""
    return input.flatten(start_dim, end_dim)


class MaxResult(NamedTuple):
    """What ``Tensor.max(dim)`` returns, as ``torch.return_types.max``."""

    values: Tensor
    indices: Tensor


class MinResult(NamedTuple):
    """What ``Tensor.min(dim)`` returns, as ``torch.return_types.min``."""

    values: Tensor
    indices: Tensor
