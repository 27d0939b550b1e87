"""Tensor shape ops: the Functions that only move or select data, written on ``ctx.xp``.

Each output element is an input element (or, in a gradient, a sum of them): reshape/flatten,
permute/transpose, expand, indexing and slicing (GetItem), cat, stack, the pieces of split/chunk,
and ToBackend (the same values on another backend), with ``check_dim``, the dim check their
Tensor methods share. The Functions that compute new values (arithmetic, elementwise math,
reductions, where) are in tensor_ops.py. Each Function's ``symbolic`` writes its ONNX ops
(gpucnn.onnx calls it with the forward's arguments, each Tensor replaced by its ONNX value name).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .autograd import Function
from .tensor import Tensor
from .tensor_ops import sum_to_shape


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


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """``input.flatten(start_dim, end_dim)``, as ``torch.flatten``."""
    return input.flatten(start_dim, end_dim)


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
