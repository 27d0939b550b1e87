"""Tensor: a backend array, its gradient, and the link to the call that made it.

Operators record Functions (the math in ``gpucnn/core/tensor_ops.py``, the shape ops in
``gpucnn/core/shape_ops.py``); this file holds no math. Python scalars take the tensor's dtype,
so ``x32 * 0.5`` stays float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.base import FLOAT_DTYPES, Backend


def _infer_backend(data: Any) -> Backend:
    """A CuPy array is on ``cuda``; a host array on the current backend when that computes on
    the host (numpy or cuda-sim), else on ``numpy``."""
    from ..backends.registry import get_backend

    if type(data).__module__.split(".")[0] == "cupy":
        return get_backend("cuda")
    current = get_backend()
    return current if current.owns(data) else get_backend("numpy")


class Tensor:
    """A backend array (``.data``) that autograd can differentiate.

    ``.grad`` (a Tensor) is filled by ``backward`` for leaves that require grad; tensors made
    by an op remember that op (their graph node) until a backward frees it.
    """

    # numpy arrays on the left defer to our reflected operators instead of broadcasting us
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, backend: Backend | None = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        if not (hasattr(data, "shape") and hasattr(data, "dtype")):
            raise TypeError(f"Tensor: wraps a backend array, got {type(data).__name__}; use gpucnn.tensor(...) to "
                            f"make one from a list or a scalar")
        self.backend = backend if backend is not None else _infer_backend(data)
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._node: Any = None
        self._index = 0

    @classmethod
    def _wrap(cls, data: Any, requires_grad: bool, backend: Backend) -> Tensor:
        """A Tensor of an array the engine made (checked already): ``__init__`` without its checks,
        for Function outputs and gradients, which a training step makes by the dozen."""
        t = cls.__new__(cls)
        t.backend, t.data, t.requires_grad, t.grad, t._node, t._index = backend, data, requires_grad, None, None, 0
        return t

    # ---------------------------------------------------------------- what it holds
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape  # a tuple for NumPy and CuPy arrays alike

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None) -> Any:
        """The shape, or one axis's length (PyTorch's ``size()``)."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> Any:
        return self._node

    def numpy(self) -> np.ndarray:
        """The values as a host ``numpy.ndarray`` (a copy when they live on a GPU)."""
        return self.backend.to_numpy(self.data)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = self.numpy()
        return host if dtype is None else host.astype(dtype, copy=False)

    def item(self) -> float | int:
        if self.numel() != 1:
            raise ValueError(f"item: only a one-element tensor has an item, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def __bool__(self) -> bool:
        # without this, Python would fall back on __len__: tensor([0.]) would be true, a 0-d one an error
        if self.numel() != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                               f"use .any() or .all() on .numpy(), or .item() for one element")
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """The same array, cut from the graph."""
        return Tensor(self.data, backend=self.backend)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"requires_grad_: only float tensors can require grad, got dtype {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, backend: str | Backend) -> Tensor:
        """This tensor on another backend (differentiable: the gradient travels back)."""
        from .shape_ops import ToBackend

        return ToBackend.apply(self, backend)

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}, dtype={self.dtype}, backend={self.backend.name!r}{grad})"

    # ---------------------------------------------------------------- autograd
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate the gradient of this tensor into ``.grad`` of every leaf that needs one."""
        from .autograd import run_backward

        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph (it was computed "
                               "under no_grad(), or from inputs none of which require grad)")
        if grad is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward: a gradient can be implied only for a one-element output; this "
                                   f"tensor has shape {self.shape}, so pass backward(grad=...)")
            grad = self.backend.xp.ones(self.data.shape, dtype=self.dtype)
        else:
            grad = grad.data if isinstance(grad, Tensor) else self.backend.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward: grad has shape {tuple(grad.shape)}, the tensor {self.shape}")
        run_backward(self, grad, retain_graph)

    def _accumulate(self, g: Any) -> None:
        # never in place: the same gradient array may reach several leaves (an add's two inputs)
        if self.grad is None:
            self.grad = Tensor._wrap(g, False, self.backend)
        else:
            self.grad = Tensor._wrap(self.grad.data + g, False, self.backend)

    # ---------------------------------------------------------------- operators
    def _operand(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float)):
            return Tensor(self.backend.xp.asarray(other, dtype=self.dtype), backend=self.backend)
        return Tensor(self.backend.asarray(other), backend=self.backend)

    def __add__(self, other: Any) -> Tensor:
        return _basic().Add.apply(self, self._operand(other))

    def __radd__(self, other: Any) -> Tensor:
        return _basic().Add.apply(self._operand(other), self)

    def __sub__(self, other: Any) -> Tensor:
        return _basic().Sub.apply(self, self._operand(other))

    def __rsub__(self, other: Any) -> Tensor:
        return _basic().Sub.apply(self._operand(other), self)

    def __mul__(self, other: Any) -> Tensor:
        return _basic().Mul.apply(self, self._operand(other))

    def __rmul__(self, other: Any) -> Tensor:
        return _basic().Mul.apply(self._operand(other), self)

    def __truediv__(self, other: Any) -> Tensor:
        return _basic().Div.apply(self, self._operand(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return _basic().Div.apply(self._operand(other), self)

    def __matmul__(self, other: Any) -> Tensor:
        return _basic().MatMul.apply(self, self._operand(other))

    def __rmatmul__(self, other: Any) -> Tensor:
        return _basic().MatMul.apply(self._operand(other), self)

    def __neg__(self) -> Tensor:
        return _basic().Neg.apply(self)

    def __pow__(self, exponent: float) -> Tensor:
        return _basic().Pow.apply(self, float(exponent))

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, Tensor):
            index = index.data
        return _shape().GetItem.apply(self, index)

    def sum(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
        return _basic().Sum.apply(self, dim, keepdim)

    def mean(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
        return _basic().Mean.apply(self, dim, keepdim)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _shape().Reshape.apply(self, shape)

    def view(self, *shape: Any) -> Tensor:
        """``reshape``: unlike PyTorch's ``view``, which refuses a non-contiguous tensor, gpucnn's
        copies when it needs to (as ``reshape`` does), so it never raises for the layout."""
        return self.reshape(*shape)

    def reshape_as(self, other: Tensor) -> Tensor:
        return self.reshape(tuple(other.shape))

    def permute(self, *dims: Any) -> Tensor:
        """The axes reordered: output axis i is input axis ``dims[i]`` (negative dims count from the end)."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        n = self.ndim
        valid = all(isinstance(d, int) and not isinstance(d, bool) and -n <= d < n for d in dims)
        resolved = tuple(d % n for d in dims) if valid and n else tuple(dims)
        if not valid or sorted(resolved) != list(range(n)):
            raise ValueError(f"permute: expected a permutation of 0..{n - 1}, got {tuple(dims)}")
        return _shape().Permute.apply(self, resolved)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """``dim0`` and ``dim1`` swapped."""
        ops = _shape()
        a, b = ops.check_dim(dim0, self.ndim, "transpose"), ops.check_dim(dim1, self.ndim, "transpose")
        dims = list(range(self.ndim))
        dims[a], dims[b] = dims[b], dims[a]
        return ops.Permute.apply(self, tuple(dims))

    @property
    def T(self) -> Tensor:  # noqa: N802  (PyTorch's name)
        """Every axis reversed (a matrix transposed)."""
        return _shape().Permute.apply(self, tuple(range(self.ndim))[::-1])

    @property
    def mT(self) -> Tensor:  # noqa: N802
        """The last two axes swapped (a batch of matrices transposed)."""
        if self.ndim < 2:
            raise ValueError(f"mT: expected a tensor of at least 2 dims, got shape {self.shape}")
        return self.transpose(-2, -1)

    def split(self, split_size_or_sections: int | list[int] | tuple[int, ...], dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces along ``dim``: of ``split_size_or_sections`` each (the last one shorter where the size
        does not divide), or of the listed sizes (which must add up to the axis's length), as PyTorch's."""
        ops = _shape()
        axis = ops.check_dim(dim, self.ndim, "split")
        length = self.shape[axis]
        if isinstance(split_size_or_sections, int) and not isinstance(split_size_or_sections, bool):
            step = split_size_or_sections
            if step < 1:
                raise ValueError(f"split: expected a split size of at least 1, got {step}")
            sizes = [min(step, length - start) for start in range(0, length, step)] or [0]
        else:
            sizes = [int(s) for s in split_size_or_sections]
            if any(s < 0 for s in sizes) or sum(sizes) != length:
                raise ValueError(f"split: expected sizes >= 0 that add up to {length} (the length of dim {dim}), "
                                 f"got {tuple(sizes)}")
        return tuple(ops.SplitPiece.apply(self, axis, tuple(sizes), i) for i in range(len(sizes)))

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        """At most ``chunks`` pieces along ``dim``, each ceil(length / chunks) long but the last, as
        PyTorch's (so fewer than ``chunks`` where the length does not allow that many)."""
        if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
            raise ValueError(f"chunk: expected a number of chunks of at least 1, got {chunks!r}")
        length = self.shape[_shape().check_dim(dim, self.ndim, "chunk")]
        return self.split(max(-(-length // chunks), 1), dim)

    def expand(self, *sizes: Any) -> Tensor:
        """A broadcast view of size ``sizes`` (-1 keeps an axis; new axes go in front), as PyTorch's;
        gpucnn's copies."""
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        sizes = tuple(int(s) for s in sizes)
        extra = len(sizes) - self.ndim
        if extra < 0:
            raise ValueError(f"expand: expected at least {self.ndim} sizes (the tensor's dims), got {sizes}")
        shape = []
        for i, size in enumerate(sizes):
            old = self.shape[i - extra] if i >= extra else None
            if size == -1:
                if old is None:
                    raise ValueError(f"expand: -1 is not allowed for a new leading dim ({i}), got sizes {sizes}")
                size = old
            if size < 0 or (old is not None and old != 1 and old != size):
                raise ValueError(f"expand: expected size {old} (or 1 to stretch) at dim {i}, got {size}; sizes "
                                 f"{sizes}, tensor shape {self.shape}")
            shape.append(size)
        return _shape().Expand.apply(self, tuple(shape))

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(tuple(other.shape))

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
        """Values limited to [min, max] (scalars; either may be None); the gradient passes inside them."""
        if min is None and max is None:
            raise ValueError("clamp: expected min or max (or both), got neither")
        for name, bound in (("min", min), ("max", max)):
            if bound is not None and not isinstance(bound, (int, float, np.integer, np.floating)):
                raise TypeError(f"clamp: expected a number or None for {name}, got {type(bound).__name__}")
        return _basic().Clamp.apply(self, None if min is None else float(min), None if max is None else float(max))

    clip = clamp

    def sqrt(self) -> Tensor:
        return _basic().Sqrt.apply(self)

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """The largest value (a 0-d tensor), or with ``dim`` the named tuple ``(values, indices)`` along
        it, as PyTorch's: the gradient goes to the first largest (shared among equals without ``dim``)."""
        return self._extreme(dim, keepdim, True)

    def min(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """As ``max``, for the smallest."""
        return self._extreme(dim, keepdim, False)

    def _extreme(self, dim: int | None, keepdim: bool, largest: bool) -> Any:
        ops = _basic()
        name = "max" if largest else "min"
        if self.numel() == 0:
            raise ValueError(f"{name}: expected a non-empty tensor, got shape {self.shape}")
        function = ops.Max if largest else ops.Min
        if dim is None:
            return function.apply(self, None, False)
        axis = _shape().check_dim(dim, self.ndim, name)
        values = function.apply(self, axis, bool(keepdim))
        indices = ops.ArgExtreme.apply(self, axis, bool(keepdim), largest)
        indices.requires_grad = False  # int64 positions: no gradient flows through them
        return (ops.MaxResult if largest else ops.MinResult)(values, indices)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        shape = self.shape
        start, end = start_dim % max(self.ndim, 1), end_dim % max(self.ndim, 1)
        if self.ndim == 0 or start >= end:
            return self.reshape(shape if self.ndim else (1,))
        return self.reshape(shape[:start] + (-1,) + shape[end + 1:])

    def exp(self) -> Tensor:
        return _basic().Exp.apply(self)

    def log(self) -> Tensor:
        return _basic().Log.apply(self)

    def argmax(self, dim: int | None = None) -> Tensor:
        """Indices of the largest values (not differentiable)."""
        return Tensor(self.data.argmax(axis=dim), backend=self.backend)

    # comparisons give bool tensors, as PyTorch's: recorded Functions (so that an export writes them, and a
    # ``where(x > 0, ...)`` mask follows the input), never needing a gradient
    def _compare(self, other: Any, op: str) -> Tensor:
        if other is None or isinstance(other, str):
            return Tensor(getattr(self.data, f"__{op.lower()}__")(other), backend=self.backend)
        operand = None
        if isinstance(other, (int, float)) and self.dtype.kind in "biu":
            # a scalar an integer or bool dtype cannot hold (1.5, 2 for bool, 300 for uint8) keeps its own
            # dtype: NumPy compares it exactly, as it did before comparisons were recorded
            try:
                operand = self._operand(other)
                exact = operand.data.item() == other
            except (OverflowError, ValueError):
                exact = False
            if not exact:
                operand = Tensor(self.backend.asarray(np.asarray(other)), backend=self.backend)
        if operand is None:
            operand = self._operand(other)
        function = getattr(_basic(), _COMPARISONS[op])
        # a recorded mask (``(x > 0) == (x < 1)``) needs no gradient, yet its comparison must be recorded too,
        # or an export would write it as a constant: it counts as wanting one for this call only
        masks = [t for t in (self, operand) if t._node is not None and not t.requires_grad]
        for t in masks:
            t.requires_grad = True
        try:
            result = function.apply(self, operand)
        finally:
            for t in masks:
                t.requires_grad = False
        result.requires_grad = False  # bool: no gradient flows through a comparison
        return result

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, "eq")

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, "ne")

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, "lt")

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, "le")

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, "gt")

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, "ge")

    __hash__ = object.__hash__


_COMPARISONS = {"eq": "Equal", "ne": "NotEqual", "lt": "Less", "le": "LessEqual", "gt": "Greater",
                "ge": "GreaterEqual"}


def _basic() -> Any:
    # tensor_ops imports this module (the core's one cycle), so it is imported on first use, then kept
    global _basic_module
    if _basic_module is None:
        from . import tensor_ops

        _basic_module = tensor_ops
    return _basic_module


def _shape() -> Any:
    # shape_ops, as _basic: it imports this module too
    global _shape_module
    if _shape_module is None:
        from . import shape_ops

        _shape_module = shape_ops
    return _shape_module


_basic_module: Any = None
_shape_module: Any = None


class HookHandle:
    """What ``register_..._hook`` returns: ``remove()`` takes the hook out again."""

    _next_id = 0

    def __init__(self, hooks: dict[int, Any], hook: Any) -> None:
        HookHandle._next_id += 1
        self._hooks, self.id = hooks, HookHandle._next_id
        hooks[self.id] = hook

    def remove(self) -> None:
        self._hooks.pop(self.id, None)


class Parameter(Tensor):
    """A trainable Tensor (requires grad), with the optimizer state that belongs to it.

    Keeping optimizer state on the parameter lets ``model.to(backend)`` move it along.
    """

    def __init__(self, data: Any, requires_grad: bool = True, backend: Backend | None = None) -> None:
        super().__init__(data, requires_grad, backend)
        self.state: dict[str, Any] = {}
        self._post_accumulate_hooks: dict[int, Any] = {}

    def register_post_accumulate_grad_hook(self, hook: Any) -> HookHandle:
        """Call ``hook(param)`` each time backward has added a gradient into ``param.grad`` (as
        PyTorch's hook of that name): gpucnn.distributed starts averaging a bucket of gradients
        there, while backward goes on. ``.remove()`` on the returned handle unregisters it."""
        return HookHandle(self._post_accumulate_hooks, hook)

    def _accumulate(self, g: Any) -> None:
        super()._accumulate(g)
        if self._post_accumulate_hooks:
            # a copy of the values: a hook may remove itself (or others) while they run
            for hook in list(self._post_accumulate_hooks.values()):
                hook(self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            self.grad = Tensor(self.backend.xp.zeros_like(self.grad.data), backend=self.backend)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, backend={self.backend.name!r})"


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, backend: str | Backend | None = None) -> Tensor:
    """A new leaf Tensor from an array, a nested list or a scalar (copied onto ``backend``).

    Python floats become float32, as in PyTorch; arrays keep their dtype unless ``dtype`` is given.
    """
    from ..backends.registry import get_backend

    if isinstance(data, Tensor):
        data = data.numpy()
    target = get_backend(backend)
    if dtype is None and not hasattr(data, "dtype"):
        host = np.asarray(data)
        dtype = np.float32 if host.dtype == np.float64 else host.dtype
    array = target.asarray(data if hasattr(data, "dtype") else np.asarray(data), dtype=dtype)
    if requires_grad and array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"tensor: only float tensors can require grad, got dtype {array.dtype}")
    return Tensor(array, requires_grad, target)
