"""Define-by-run autograd: ``Function.apply`` records one node per call, ``backward`` walks them.

Each call of a Function gets its own ``Context`` for what its backward needs, so any number of
forward passes before a backward, a layer used twice, or any DAG of calls is differentiated
correctly. Forward and backward work on the backend's arrays (NumPy or CuPy, ``ctx.xp``); the
engine wraps results in Tensors and knows nothing of backends, kernels or fusions. No CuPy import.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from ..backends.base import Backend
from .tensor import Tensor


def backend_for_arrays(tensors: list[Tensor], owner: str) -> Backend:
    """The one backend an op over ``tensors`` runs on. Host backends (numpy, cuda-sim) share
    arrays, so tensors of both meet on the more specific one; a CuPy and a NumPy tensor do not."""
    if not tensors:
        from ..backends.registry import get_backend

        return get_backend()
    chosen = tensors[0].backend
    for t in tensors[1:]:
        if t.backend is chosen:
            continue
        if chosen.owns(t.data) and t.backend.owns(tensors[0].data):
            chosen = chosen if t.backend.name == "numpy" else t.backend
            continue
        raise TypeError(f"{owner}: tensors on different backends ({chosen.name!r} and {t.backend.name!r}); "
                        f"move them with .to(...) first")
    return chosen


class _ThreadState(threading.local):
    """Per-thread engine switches. Class-level defaults, so that reading one never misses: a
    missed ``getattr(local, name, default)`` raises and catches AttributeError inside, which costs
    more than the rest of a layer call's bookkeeping."""

    enabled = True  # False inside no_grad()
    tracer: Any = None  # set by tracing()


_thread_state = _ThreadState()


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``: nothing is recorded or saved for a backward pass."""
    return _thread_state.enabled


@contextlib.contextmanager
def set_grad_enabled(enabled: bool) -> Iterator[None]:
    previous = is_grad_enabled()
    _thread_state.enabled = bool(enabled)
    try:
        yield
    finally:
        _thread_state.enabled = previous


@contextlib.contextmanager
def tracing(tracer: Any) -> Iterator[None]:
    """Show ``tracer`` every Function call (``function_called(cls, args, kwargs, result)``) and
    every Module call (``module_entered(module)`` / ``module_left(module)``) of this thread while
    the block runs: how gpucnn.onnx reads a model's operations with all their arguments."""
    previous = current_tracer()
    _thread_state.tracer = tracer
    try:
        yield
    finally:
        _thread_state.tracer = previous


def current_tracer() -> Any:
    return _thread_state.tracer


def no_grad() -> contextlib.AbstractContextManager:
    """``with gpucnn.no_grad():`` (or ``@gpucnn.no_grad()``): inference without a graph."""
    return set_grad_enabled(False)


def enable_grad() -> contextlib.AbstractContextManager:
    return set_grad_enabled(True)


class Context:
    """What one call of a Function keeps for its backward (``ctx`` in forward and backward)."""

    def __init__(self, backend: Any, needs_input_grad: tuple[bool, ...], records: bool = False) -> None:
        self.backend = backend
        #: one flag per positional argument of ``apply``: does that input want a gradient?
        self.needs_input_grad = needs_input_grad
        #: True when a backward may follow (so forward should keep what it needs)
        self.records = records
        self._saved: tuple = ()
        self._released = False

    @property
    def xp(self) -> Any:
        """The array namespace of this call's backend (numpy or cupy)."""
        return self.backend.xp

    def save_for_backward(self, *arrays: Any) -> None:
        if self.records:  # under no_grad nothing is kept: inference frees each activation at once
            self._saved = tuple(a.data if isinstance(a, Tensor) else a for a in arrays)

    @property
    def saved_tensors(self) -> tuple:
        if self._released:
            raise RuntimeError(_SECOND_BACKWARD)
        return self._saved

    def release(self) -> None:
        """Free everything the forward kept (after a backward without retain_graph)."""
        self.__dict__ = {"backend": self.backend, "needs_input_grad": self.needs_input_grad,
                         "records": self.records, "_saved": (), "_released": True}


_SECOND_BACKWARD = ("backward: trying to go through part of the graph a second time, but its saved arrays were "
                    "freed by the first backward; call .backward(retain_graph=True) the first time")


class Node:
    """One recorded call: the function, its context, and an edge for each input that wants a
    gradient. An edge leads to the node that made that input (and which of its outputs), or to
    the leaf tensor itself; the node keeps no intermediate tensor, so activations are freed as
    soon as the user drops them and backward has used what the context saved."""

    __slots__ = ("function", "ctx", "edges", "outputs")

    def __init__(self, function: type, ctx: Context, inputs: tuple[Tensor | None, ...],
                 outputs: tuple[tuple[tuple[int, ...], Any], ...]) -> None:
        self.function, self.ctx = function, ctx
        self.edges = tuple(None if t is None else _edge(t) for t in inputs)
        self.outputs = outputs  # (shape, dtype) of each output, to give unused ones a zero gradient

    def parents(self) -> Iterator[Node]:
        for edge in self.edges:
            if edge is not None and edge[0] is not None:
                yield edge[0]

    def __repr__(self) -> str:
        return f"<{self.function.__name__} backward>"


def _edge(t: Tensor) -> tuple:
    """Where one input's gradient goes: (node, output index, None, shape, dtype) into the node
    that made it, or (None, 0, leaf, shape, dtype) into ``leaf.grad``. A plain tuple: a LeNet-5
    step makes 16 of them, and a class instance each cost measurably more."""
    node = t._node
    return node, t._index, t if node is None else None, t.data.shape, t.data.dtype


class Function:
    """An op with a hand-written backward, as ``torch.autograd.Function``::

        class Square(gpucnn.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * x

            @staticmethod
            def backward(ctx, dy):
                (x,) = ctx.saved_tensors
                return 2 * x * dy

        y = Square.apply(t)

    ``forward`` receives the backend arrays of Tensor arguments (other arguments as given) and
    returns an array or a tuple of arrays; ``backward`` receives one gradient array per output
    and returns one per positional input (None where there is none).
    """

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, *grads: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        # the per-call overhead matters (a LeNet-5 eval chunk is ~0.7 ms of 6 calls): plain loops and
        # a saved flag instead of generator expressions and a context manager
        state = _thread_state
        recording = state.enabled  # False under no_grad: no input wants a gradient, nothing is recorded
        tensors, raw, needs = [], [], []
        for a in args:
            if isinstance(a, Tensor):
                tensors.append(a)
                raw.append(a.data)
                needs.append(recording and a.requires_grad)
            else:
                raw.append(a)
                needs.append(False)
        records = True in needs
        backend = backend_for_arrays(tensors, cls.__name__)
        ctx = Context(backend, tuple(needs), records)
        if recording:
            state.enabled = False  # ops inside forward record nothing of their own
            try:
                result = cls.forward(ctx, *raw, **kwargs)
            finally:
                state.enabled = True
        else:
            result = cls.forward(ctx, *raw, **kwargs)
        many = isinstance(result, tuple)
        backend = ctx.backend  # a forward may move its result (Tensor.to sets ctx.backend to the target)
        make = Tensor._wrap
        outputs = tuple(make(r, records, backend) for r in result) if many else (make(result, records, backend),)
        if records:
            node = Node(cls, ctx, tuple(a if need else None for a, need in zip(args, needs)),
                        tuple((o.shape, o.dtype) for o in outputs))
            for index, out in enumerate(outputs):
                out._node, out._index = node, index
        result = outputs if many else outputs[0]
        tracer = state.tracer
        if tracer is not None:
            tracer.function_called(cls, args, kwargs, result)
        return result


# ---------------------------------------------------------------------------- the backward pass
def run_backward(root: Tensor, grad: Any, retain_graph: bool = False) -> None:
    """Accumulate d root / d leaf into every leaf's ``.grad``, seeding with ``grad``."""
    if root._node is None:
        root._accumulate(grad)
        return
    pending: dict[Node, list[Any]] = {root._node: _slots(root._node)}
    pending[root._node][root._index] = grad
    for node in _topological_order(root._node):
        grads = pending.pop(node)
        if node.ctx._released:
            raise RuntimeError(_SECOND_BACKWARD)
        xp = node.ctx.xp
        grads = [xp.zeros(shape, dtype) if g is None else g for g, (shape, dtype) in zip(grads, node.outputs)]
        input_grads = node.function.backward(node.ctx, *grads)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) < len(node.edges):
            raise RuntimeError(f"{node.function.__name__}.backward returned {len(input_grads)} gradients for "
                               f"{len(node.edges)} inputs")
        if not retain_graph:
            node.ctx.release()
        for edge, g in zip(node.edges, input_grads):
            if edge is None or g is None:
                continue
            parent, index, leaf, shape, dtype = edge
            if g.shape != shape or g.dtype != dtype:
                g = _matching(g, shape, dtype, node)
            if leaf is not None:
                leaf._accumulate(g)
            else:
                slots = pending.get(parent)
                if slots is None:
                    slots = pending[parent] = _slots(parent)
                previous = slots[index]
                slots[index] = g if previous is None else previous + g


def _slots(node: Node) -> list[Any]:
    return [None] * len(node.outputs)


def _matching(g: Any, shape: tuple[int, ...], dtype: Any, node: Node) -> Any:
    if tuple(g.shape) != tuple(shape):
        raise RuntimeError(f"{node.function.__name__}.backward returned a gradient of shape {tuple(g.shape)} "
                           f"for an input of shape {tuple(shape)}")
    return g if g.dtype == dtype else g.astype(dtype)


def _topological_order(root: Node) -> list[Node]:
    """Every node reachable from ``root``, each before the nodes it takes inputs from.
    Iterative (a depth-first post-order, reversed), so deep networks meet no recursion limit."""
    order: list[Node] = []
    visited = {root}
    stack = [(root, root.parents())]
    while stack:
        node, parents = stack[-1]
        for parent in parents:
            if parent not in visited:
                visited.add(parent)
                stack.append((parent, parent.parents()))
                break
        else:
            stack.pop()
            order.append(node)
    order.reverse()
    return order
