"""Module and Parameter: the parts every layer shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backend import get_backend
from ..backends.base import FLOAT_DTYPES, Backend


class Parameter:
    """A trainable array, its gradient, and the optimizer state that belongs to it.

    Keeping optimizer state on the parameter lets ``model.to(backend)`` move it along.
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self.grad: Any = None
        self.state: dict[str, Any] = {}
        #: the backend this parameter's arrays live on (set by the module that owns it)
        self.backend: Backend | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def size(self) -> int:
        return int(self.data.size)

    def accumulate(self, grad: Any) -> None:
        """Add a gradient (layers accumulate, so several backward passes may sum)."""
        if self.grad is None:
            self.grad = grad
        else:
            self.grad = self.grad + grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.data.dtype})"


class Module:
    """Base layer: holds parameters, buffers and child modules; ``forward``/``backward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "backend", get_backend())

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Parameter):
            value.backend = self.backend
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ structure
    def register_buffer(self, name: str, value: Any) -> None:
        """A non-trainable array that is saved and moved with the model (e.g. running stats)."""
        self._buffers[name] = None
        object.__setattr__(self, name, value)

    def children(self) -> Iterator[tuple[str, Module]]:
        return iter(self._children.items())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, param in self._parameters.items():
            yield prefix + name, param
        for child_name, child in self._children.items():
            yield from child.named_parameters(f"{prefix}{child_name}.")

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Module, str]]:
        """(full name, owning module, attribute name) for every buffer."""
        for name in self._buffers:
            yield prefix + name, self, name
        for child_name, child in self._children.items():
            yield from child.named_buffers(f"{prefix}{child_name}.")

    def modules(self) -> Iterator[Module]:
        yield self
        for _, child in self._children.items():
            yield from child.modules()

    def params(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.params())

    def zero_grad(self) -> None:
        for p in self.params():
            p.grad = None

    # ------------------------------------------------------------------ modes and devices
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, backend: str | Backend) -> Module:
        """Move parameters, gradients, optimizer state and buffers to another backend."""
        target = get_backend(backend)
        for m in self.modules():
            source = m.backend
            if source is target:
                continue

            def move(a: Any, source: Backend = source) -> Any:
                return None if a is None else target.asarray(source.to_numpy(a))

            for p in m._parameters.values():
                p.data = move(p.data)
                p.grad = move(p.grad)
                p.state = {k: move(v) if hasattr(v, "shape") else v for k, v in p.state.items()}
                p.backend = target
            for name in m._buffers:
                object.__setattr__(m, name, move(getattr(m, name)))
            m._moved(target)
            object.__setattr__(m, "backend", target)
        return self

    def _moved(self, target: Backend) -> None:
        """Hook for layers that keep backend arrays outside parameters and buffers."""

    # ------------------------------------------------------------------ running
    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def forward(self, x: Any) -> Any:
        raise NotImplementedError

    def backward(self, dy: Any) -> Any:
        raise NotImplementedError

    def backward_params(self, dy: Any) -> None:
        """Gradients for the parameters only, for a model whose input needs none: layers that can
        (Conv2d, and containers starting with one) then skip computing the input gradient."""
        self._backward_maybe_input(dy, need_input_grad=False)

    #: layers whose ``backward`` takes ``need_input_grad`` (Conv2d, Sequential, Concat) set this
    can_skip_input_grad = False

    def _backward_maybe_input(self, dy: Any, need_input_grad: bool) -> Any:
        if need_input_grad or not self.can_skip_input_grad:
            return self.backward(dy)
        return self.backward(dy, need_input_grad=False)

    def _layer_name(self) -> str:
        return type(self).__name__

    def _check_input(self, x: Any, ndim: int, channels: int | None = None,
                     layout: str = "(N, C, H, W)") -> None:
        """Reject what the op cannot take, naming the layer, what it expected and got."""
        name = self._layer_name()
        if not self.backend.owns(x):
            raise TypeError(
                f"{name} is on backend {self.backend.name!r} and expects a "
                f"{self.backend.array_type.__module__}.ndarray, got {type(x).__module__}."
                f"{type(x).__name__}; move it with gpucnn.get_backend({self.backend.name!r}).asarray(x)"
            )
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected a float32 or float64 input, got dtype {x.dtype}")
        if x.ndim != ndim:
            raise ValueError(f"{name}: expected a {ndim}-D input {layout}, got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: got an empty batch, shape {tuple(x.shape)}")
        if channels is not None and x.shape[1] != channels:
            expected = layout.replace("C", str(channels), 1)
            raise ValueError(f"{name}: expected input of shape {expected}, got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._children.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


def as_float_dtype(dtype: Any, owner: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {dt}")
    return dt
